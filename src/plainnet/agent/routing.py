"""This node's side of every routing decision: its networks and how it reaches peers.

Pure values, shared by validation and the backends (which both decide per peer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from plainnet.backend_names import DEFAULT_VNI, RECORD_TYPES
from plainnet.ipam.types import IPAddress, IPNetwork


@dataclass(frozen=True)
class LocalNetwork:
    """A network this node is directly attached to."""

    network: IPNetwork
    ifindex: int
    ifname: str
    address: IPAddress


def on_link_network(address: IPAddress, local: Iterable[LocalNetwork]) -> LocalNetwork | None:
    for network in local:
        if address.version == network.network.version and address in network.network:
            return network
    return None


@dataclass(frozen=True)
class Routing:
    """How this node routes to its peers: everything the pure backend code needs.

    ``underlay_version`` is the address family VXLAN packets travel in: that of this
    node's (first) address; every node of a cluster uses the same. ``overlay_ifindex``
    is the VXLAN device once it exists (0 before, and always for host-gw)."""

    backend: str = "host-gw"
    vni: int = DEFAULT_VNI
    underlay_version: int = 4
    overlay_ifindex: int = 0

    @property
    def record_type(self) -> str:
        """The backend type of the records this node can route to (and publishes)."""
        return RECORD_TYPES[self.backend]

    @property
    def overlay(self) -> bool:
        return self.backend != "host-gw"


HOST_GW = Routing()
