"""host-gw: every peer's pod subnet is routed via that peer's node address.

The simplest mechanism that works when all nodes share one L2 segment (the selection
guide's small cluster): plain kernel routes, no encapsulation, nothing but the kernel
in the data path — and no device of its own.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from plainnet.agent.backends.base import Backend, PeerProblem
from plainnet.agent.kernel_model import DesiredRoute, PeerState
from plainnet.agent.local_networks import LocalNetwork, on_link_network
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPNetwork


def direct_route(
    peer: PeerRecord, subnet: IPNetwork, local: Sequence[LocalNetwork]
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


def direct_routes(
    peer: PeerRecord, subnets: Iterable[IPNetwork], local: Sequence[LocalNetwork]
) -> dict[IPNetwork, DesiredRoute]:
    routes = {}
    for subnet in subnets:
        route = direct_route(peer, subnet, local)
        if route is not None:
            routes[subnet] = route
    return routes


class HostGwBackend(Backend):
    name = "host-gw"
    record_type = "host-gw"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostGwBackend)

    def __hash__(self) -> int:
        return hash(self.name)

    def check_peer(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerProblem | None:
        for subnet in peer.subnets:
            gateway = peer.address_for(subnet.version)
            if gateway is None:
                return PeerProblem(
                    "family",
                    f"subnet {subnet} has no IPv{subnet.version} node address to route it through",
                )
            if on_link_network(gateway, local) is None:
                return PeerProblem(
                    "not-on-link",
                    f"node address {gateway} is not on a network of this node: host-gw "
                    f"needs every node on one L2 segment; use the vxlan or auto backend "
                    f"(an overlay), or BGP",
                )
        return None

    def peer_state(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerState:
        return PeerState(direct_routes(peer, peer.subnets, local))


def from_options(options: dict[str, object]) -> HostGwBackend:
    if options:
        from plainnet.agent.backends.options import unknown_options

        unknown_options("host-gw", options)
    return HostGwBackend()
