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
