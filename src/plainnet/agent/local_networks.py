"""This node's side of every routing decision: the networks it is attached to. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


def node_networks(
    local: Iterable[LocalNetwork],
    cluster_cidrs: Iterable[IPNetwork],
    pod_subnets: Iterable[IPNetwork] = (),
) -> list[LocalNetwork]:
    """The networks that are the node's own, not a pod bridge's (``cbr0`` holds this
    node's pod gateway once the first pod exists). A pod bridge's network overlaps one
    of this node's ``pod_subnets``; where they are not known yet (before the first
    claim), it is one inside the cluster CIDR. The first rule also serves a cluster CIDR
    drawn around the node network (10.0.0.0/8 with nodes on 10.250.0.0/24)."""
    pods = list(pod_subnets)
    if pods:
        return [
            n
            for n in local
            if not any(n.network.version == s.version and n.network.overlaps(s) for s in pods)  # type: ignore[arg-type]
        ]
    cidrs = list(cluster_cidrs)
    return [
        n
        for n in local
        if not any(n.network.version == c.version and n.network.subnet_of(c) for c in cidrs)  # type: ignore[arg-type]
    ]
