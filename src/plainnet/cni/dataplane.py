"""What the CNI handler needs of the kernel, as an interface: the node bridge, a veth
per pod, its addresses and routes, masquerade. The handler's logic is tested without
root against a fake; :mod:`plainnet.cni.netlink_dataplane` is the real one (pyroute2,
nft)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface
from typing import Protocol

from plainnet.ipam.types import IPAddress, IPNetwork

Interface = IPv4Interface | IPv6Interface


HOST_VETH = re.compile(r"pn[0-9a-f]{11}")
#: The interface alias of plainnet's node bridge, and the prefix of a host veth's (the
#: network's name follows): how GC tells its own devices, and one network's, apart.
BRIDGE_ALIAS = "plainnet pod bridge"
VETH_ALIAS = "plainnet/"


def veth_alias(network: str) -> str:
    """The alias that marks a node-side veth as ``network``'s: ``plainnet/<network>``, or
    for a name too long for an interface alias (the kernel takes 255 bytes; a network
    name may be longer) ``plainnet/#`` and a digest of it."""
    alias = VETH_ALIAS + network
    if len(alias.encode()) <= 255:
        return alias
    return VETH_ALIAS + "#" + hashlib.sha256(network.encode()).hexdigest()


def host_veth_name(container_id: str, ifname: str) -> str:
    """The node-side veth name of a pod interface: stable for (container, ifname), so
    DEL and GC find it again without any state; 13 characters, under the kernel's 15."""
    return "pn" + hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()[:11]


def bridge_mac(gateways: list[Interface]) -> str:
    """The node bridge's own MAC, fixed for its gateways: without one the kernel gives a
    bridge the lowest MAC of its ports, and deleting that pod changed the gateway's MAC
    under every other pod (tens of seconds without traffic, until ARP/ND expired).
    Locally administered, ``0a:58`` and the IPv4 gateway's bytes (as kubenet does for
    pods), or the last four bytes of the IPv6 gateway."""
    first = min(gateways, key=lambda g: g.version)
    tail = first.ip.packed[-4:]
    return "0a:58:" + tail.hex(":")


@dataclass(frozen=True)
class HostVeth:
    """A node-side pod veth of plainnet's (by its name), and the alias that names its
    network ("" while the ADD that made it has not attached it yet)."""

    name: str
    alias: str


@dataclass(frozen=True)
class PodLink:
    host_name: str
    host_mac: str
    pod_mac: str


class DataplaneError(Exception):
    """The kernel refused a step of a pod's plumbing; the message says which."""


class ForeignDeviceError(DataplaneError):
    """The configured bridge name belongs to a device that is not plainnet's bridge (the
    node's uplink, ``lo``, another bridge with other ports): nothing was changed."""


class PodDataplane(Protocol):
    """What the CNI handler needs of the kernel; raises :class:`DataplaneError`."""

    def ensure_bridge(self, bridge: str, gateways: list[Interface], mtu: int) -> tuple[int, str]:
        """Create or repair the node bridge (its MAC, MTU, gateway addresses); returns
        its ifindex and MAC. :class:`ForeignDeviceError` before any change if the name is
        another device's."""
        ...

    def attach_pod(
        self,
        bridge_index: int,
        mtu: int,
        netns: str,
        ifname: str,
        host_name: str,
        addresses: list[Interface],
        gateways: list[IPAddress],
        hairpin: bool,
        network: str,
    ) -> PodLink:
        """The pod's veth (attached to the bridge, marked with ``network``), addresses
        and default routes."""
        ...

    def remove_host_veth(self, host_name: str) -> bool: ...

    def host_veths(self) -> list[HostVeth]:
        """Every node-side pod veth of plainnet's, attached or not."""
        ...

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
