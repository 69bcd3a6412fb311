"""Routing backends: each computes, from accepted peers, the kernel state it wants.

One module per backend; a backend is pure and never touches the kernel itself.

- :mod:`~plainnet.agent.backends.hostgw`: ``subnet via peer-address`` (one L2 segment).
- :mod:`~plainnet.agent.backends.vxlan`: ``subnet via peer-VTEP dev plainnet.vxlan
  onlink`` plus the neighbour and FDB entries that make the VTEP reachable; with
  ``auto``, on-link peers get host-gw routes and only the others are encapsulated.
"""

from __future__ import annotations

from collections.abc import Iterable

from plainnet.agent.backends import hostgw, vxlan
from plainnet.agent.reconcile import DesiredRoute
from plainnet.agent.routing import LocalNetwork, Routing
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPNetwork


def desired_routes(
    peers: Iterable[PeerRecord], local: list[LocalNetwork], routing: Routing
) -> dict[IPNetwork, DesiredRoute]:
    """The route every subnet of every (validated) peer should have."""
    if routing.overlay:
        return vxlan.desired_routes(peers, local, routing)
    return hostgw.desired_routes(peers, local)
