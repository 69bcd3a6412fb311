"""Pod plumbing in the kernel: the node bridge (pyroute2), a veth per pod with its
addresses, routes, hairpin and MTU (the lean requests of :mod:`plainnet.cni.pod_netlink`,
made for bursts of ADDs) — and the masquerade rules.

:class:`NetlinkDataplane` is the real :class:`~plainnet.cni.dataplane.PodDataplane`.
It runs inside the agent, in a thread per CNI request. The node side uses a netlink socket in
the agent's own namespace; the pod side one created inside the pod's namespace
(:func:`plainnet.namespaces.thread_in_namespace`), without forking.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from ipaddress import ip_address, ip_interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from plainnet.cni import masquerade
from plainnet.cni.dataplane import (
    BRIDGE_ALIAS,
    HOST_VETH,
    DataplaneError,
    ForeignDeviceError,
    HostVeth,
    Interface,
    PodLink,
    bridge_mac,
    veth_alias,
)
from plainnet.cni.pod_netlink import plumb_pod
from plainnet.interfaces import add_address
from plainnet.ipam.types import IPAddress, IPNetwork
from plainnet.namespaces import thread_in_namespace

_bridge_lock = threading.Lock()


class NetlinkDataplane:
    """:class:`PodDataplane` on the kernel: pyroute2, and ``nft`` for masquerade."""

    def ensure_bridge(self, bridge: str, gateways: list[Interface], mtu: int) -> tuple[int, str]:
        """As :func:`ensure_bridge`, at most once a :data:`BRIDGE_RECHECK_SECONDS` for
        the same bridge, gateways and MTU: a burst of ADDs checks the bridge once, not
        50 times (a deleted or changed bridge is repaired by the next ADD after that,
        or at once after an ADD that failed on it)."""
        key = (bridge, tuple(gateways), mtu)
        known = _verified_bridges.get(key)
        if known is not None and time.monotonic() - known[2] < BRIDGE_RECHECK_SECONDS:
            return known[0], known[1]
        with _host() as host:
            index, mac = ensure_bridge(host, bridge, gateways, mtu)
        _verified_bridges[key] = (index, mac, time.monotonic())
        return index, mac

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
        with _forgetting_bridges():
            try:
                host_mac, pod_mac = plumb_pod(
                    netns,
                    ifname,
                    host_name,
                    bridge_index,
                    addresses,
                    gateways,
                    mtu,
                    hairpin,
                    veth_alias(network),
                )
            except OSError as exc:
                raise DataplaneError(str(exc)) from None
        return PodLink(host_name, host_mac, pod_mac)

    def remove_host_veth(self, host_name: str) -> bool:
        with _host() as host:
            return remove_host_veth(host, host_name)

    def host_veths(self) -> list[HostVeth]:
        with _host() as host:
            return [
                HostVeth(name, link.get("ifalias") or "")
                for link in host.link("dump")
                if HOST_VETH.fullmatch(name := link.get("ifname") or "") and _kind(link) == "veth"
            ]

    def check_pod(
        self,
        netns: str,
        ifname: str,
        host_name: str,
        bridge: str,
        addresses: list[Interface],
        gateways: list[IPAddress],
    ) -> list[str]:
        with _host() as host:
            return check_pod(host, netns, ifname, host_name, bridge, addresses, gateways)

    def ensure_masquerade(self, cluster_cidrs: list[IPNetwork]) -> None:
        try:
            masquerade.apply(cluster_cidrs)
        except masquerade.MasqueradeError as exc:
            raise DataplaneError(str(exc)) from None


#: (bridge, gateways, MTU) -> (ifindex, MAC, when it was last made sure of).
_verified_bridges: dict[tuple, tuple[int, str, float]] = {}
BRIDGE_RECHECK_SECONDS = 1.0


@contextmanager
def _forgetting_bridges() -> Iterator[None]:
    """A pod that could not be attached: check the bridge again at the next ADD."""
    try:
        yield
    except BaseException:
        _verified_bridges.clear()
        raise


#: Idle node-side netlink sockets, reused: making a pyroute2 ``IPRoute`` (a socket and
#: an asyncio loop of its own) was a fifth of an ADD's CPU, and a burst of 50 concurrent
#: ADDs made 100 of them. A socket serves one request at a time; one that failed below
#: netlink (an OSError) is closed, not kept.
_idle_hosts: list[IPRoute] = []
_idle_hosts_lock = threading.Lock()
IDLE_HOSTS_KEPT = 8


@contextmanager
def _host() -> Iterator[IPRoute]:
    """A netlink socket in the agent's namespace; kernel refusals as DataplaneError."""
    with _idle_hosts_lock:
        host = _idle_hosts.pop() if _idle_hosts else None
    try:
        if host is None:
            host = IPRoute()
        yield host
    except NetlinkError as exc:
        raise DataplaneError(str(exc)) from None
    except OSError as exc:
        if host is not None:
            host.close()
            host = None
        raise DataplaneError(str(exc)) from None
    finally:
        if host is not None:
            with _idle_hosts_lock:
                keep = len(_idle_hosts) < IDLE_HOSTS_KEPT
                if keep:
                    _idle_hosts.append(host)
            if not keep:
                host.close()


@contextmanager
def pod_netlink(netns_path: str) -> Iterator[IPRoute]:
    with thread_in_namespace(netns_path):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _kind(link) -> str | None:
    info = link.get("linkinfo")
    return info.get("kind") if info is not None else None


def remove_pod_bridges() -> list[str]:
    """Delete every bridge marked as plainnet's (its alias), whatever its name; returns
    their names. For ``plainnet agent cleanup``: another program's bridge is never one."""
    removed = []
    with IPRoute() as ipr:
        for link in ipr.link("dump"):
            if link.get("ifalias") == BRIDGE_ALIAS:
                with suppress(NetlinkError):
                    ipr.link("del", index=link["index"])
                    removed.append(link.get("ifname"))
    return removed


def ensure_bridge(ipr: IPRoute, name: str, gateways: list, mtu: int) -> tuple[int, str]:
    """Create or repair the bridge: present, its fixed MAC, up, MTU, gateway addresses.
    Idempotent and safe under concurrent ADDs. Returns (ifindex, MAC). A device of that
    name that is not plainnet's bridge is refused before anything changes."""
    mac = bridge_mac(gateways)
    with _bridge_lock:
        found = ipr.link_lookup(ifname=name)
        if not found:
            try:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=mac)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        link = ipr.link("get", index=index)[0]
        if link.get("ifalias") != BRIDGE_ALIAS:
            _adopt_bridge(ipr, link, name)
        changes: dict[str, object] = {}
        if link.get("mtu") != mtu:
            changes["mtu"] = mtu
        if link.get("address") != mac:
            changes["address"] = mac  # a bridge from before the fixed MAC, or changed
        if not link["flags"] & 1:
            changes["state"] = "up"
        if changes:
            ipr.link("set", index=index, **changes)
        present = {(a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", index=index)}
        for gateway in gateways:
            if (str(gateway.ip), gateway.network.prefixlen) not in present:
                add_address(ipr, index, gateway)
        # The bridge holds this node's gateways and nothing else: the gateway of a subnet
        # the node lost would route that subnet here instead of to its new owner.
        wanted = {(str(g.ip), g.network.prefixlen) for g in gateways}
        for address, prefixlen in present - wanted:
            if address and not ip_address(address).is_link_local:
                ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        return index, mac


def _adopt_bridge(ipr: IPRoute, link, name: str) -> None:
    """Mark a bridge plainnet may use as its own — one just made, or one made before the
    mark existed (its ports are all pod veths) — or refuse the device: ``"bridge":
    "eth0"`` put the pod gateways on the node's uplink."""
    kind = _kind(link)
    if kind != "bridge":
        raise ForeignDeviceError(
            f"{name} is a {kind or 'physical'} device, not plainnet's pod bridge; "
            'set "bridge" in the network configuration to a name no device has'
        )
    alias = link.get("ifalias")
    others = [
        port.get("ifname")
        for port in ipr.link("dump")
        if port.get("master") == link["index"] and not HOST_VETH.fullmatch(port.get("ifname") or "")
    ]
    if alias or others:
        held = f"ports {', '.join(map(str, others))}" if others else f"alias {alias!r}"
        raise ForeignDeviceError(
            f"bridge {name} is not plainnet's (it has {held}); "
            'set "bridge" in the network configuration to a name no device has'
        )
    ipr.link("set", index=link["index"], ifalias=BRIDGE_ALIAS)


def remove_host_veth(host: IPRoute, host_name: str) -> bool:
    """Delete the node side (the kernel removes the pod side with it). False if absent."""
    try:
        host.link("del", ifname=host_name)
        return True
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise


def check_pod(
    host: IPRoute,
    netns_path: str,
    ifname: str,
    host_name: str,
    bridge: str,
    addresses: list,
    gateways: list[IPAddress],
) -> list[str]:
    """What is wrong with a pod's plumbing, as sentences; empty when all is well."""
    problems = []
    bridge_index = host.link_lookup(ifname=bridge)
    host_index = host.link_lookup(ifname=host_name)
    if not bridge_index:
        problems.append(f"bridge {bridge} is missing")
    if not host_index:
        problems.append(f"node-side interface {host_name} is missing")
    elif bridge_index and host.link("get", index=host_index[0])[0].get("master") != bridge_index[0]:
        problems.append(f"{host_name} is not attached to {bridge}")
    if not os.path.exists(netns_path):
        return [*problems, f"network namespace {netns_path} is gone"]
    with pod_netlink(netns_path) as pod:
        found = pod.link_lookup(ifname=ifname)
        if not found:
            return [*problems, f"interface {ifname} is missing in the pod"]
        index = found[0]
        if not pod.link("get", index=index)[0]["flags"] & 1:
            problems.append(f"{ifname} is down")
        present = {
            ip_interface(f"{a.get('address')}/{a['prefixlen']}")
            for a in pod.addr("dump", index=index)
        }
        for address in addresses:
            if address not in present:
                problems.append(f"{ifname} lacks address {address}")
        for gateway in gateways:
            family = 2 if gateway.version == 4 else 10
            defaults = [
                r
                for r in pod.route("dump", family=family)
                if r["dst_len"] == 0 and r.get("gateway") == str(gateway)
            ]
            if not defaults:
                problems.append(f"no default route via {gateway}")
    return problems
