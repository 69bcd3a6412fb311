"""What the CNI handler needs of the kernel, as an interface: the node bridge, a veth
per pod, its addresses and routes, masquerade. The handler's logic is tested without
root against a fake; :mod:`plainnet.cni.netlink_dataplane` is the real one (pyroute2,
nft)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface
from typing import Protocol

from plainnet.ipam.types import IPAddress, IPNetwork

Interface = IPv4Interface | IPv6Interface


def host_veth_name(container_id: str, ifname: str) -> str:
    """The node-side veth name of a pod interface: stable for (container, ifname), so
    DEL and GC find it again without any state; 13 characters, under the kernel's 15."""
    return "pn" + hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()[:11]


@dataclass(frozen=True)
class PodLink:
    host_name: str
    host_mac: str
    pod_mac: str


class DataplaneError(Exception):
    """The kernel refused a step of a pod's plumbing; the message says which."""


class PodDataplane(Protocol):
    """What the CNI handler needs of the kernel; raises :class:`DataplaneError`."""

    def attach_pod(
        self,
        bridge: str,
        gateways: list[Interface],
        mtu: int,
        netns: str,
        ifname: str,
        host_name: str,
        addresses: list[Interface],
        hairpin: bool,
    ) -> tuple[str, PodLink]:
        """Create or repair the bridge (gateways, MTU), then the pod's veth, addresses
        and default routes; returns the bridge's MAC and the pod's link."""
        ...

    def remove_host_veth(self, host_name: str) -> bool: ...

    def bridge_ports(self, bridge: str) -> list[str]: ...

    def check_pod(
        self,
        netns: str,
        ifname: str,
        host_name: str,
        bridge: str,
        addresses: list[Interface],
        gateways: list[IPAddress],
    ) -> list[str]: ...

    def ensure_masquerade(self, cluster_cidrs: list[IPNetwork]) -> None: ...
