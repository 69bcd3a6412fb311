"""host-gw: every peer's pod subnet is routed via that peer's node address.

The simplest mechanism that works when all nodes share one L2 segment (scenario 1):
plain kernel routes, no encapsulation, nothing but the kernel in the data path.
"""

from __future__ import annotations

from collections.abc import Iterable

from plainnet.agent.reconcile import DesiredRoute
from plainnet.agent.routing import LocalNetwork, on_link_network
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPNetwork

NAME = "host-gw"


def direct_route(
    peer: PeerRecord, subnet: IPNetwork, local: list[LocalNetwork]
) -> DesiredRoute | None:
    """``subnet via <peer address> dev <on-link interface>``, or None if the peer has no
    address of the subnet's family on a network of this node."""
    gateway = peer.address_for(subnet.version)
    if gateway is None:
        return None
    network = on_link_network(gateway, local)
    if network is None:
        return None
    return DesiredRoute(subnet, gateway, network.ifindex, peer.node)


def desired_routes(
    peers: Iterable[PeerRecord], local: list[LocalNetwork]
) -> dict[IPNetwork, DesiredRoute]:
    """A direct route for every subnet of every (validated) peer."""
    routes: dict[IPNetwork, DesiredRoute] = {}
    for peer in peers:
        for subnet in peer.subnets:
            route = direct_route(peer, subnet, local)
            if route is not None:
                routes[subnet] = route
    return routes
