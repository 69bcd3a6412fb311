"""The VXLAN device itself: created, checked and repaired, or removed — with pyroute2.

A device is a handful of requests made rarely (at start, after a link event, on a
resync), so it goes through pyroute2 like the lab and the CNI plugin; the per-peer bulk
(routes, neighbour and FDB entries) goes through :mod:`plainnet.agent.netlink`.
pyroute2's synchronous API refuses to run inside a running asyncio loop; the
reconciler runs these functions on its kernel thread — and the backend imports this
module only when it needs a device, so a host-gw agent never loads pyroute2.

A device whose VNI, port, local address or uplink differ from the wanted ones is
replaced (the kernel cannot change them in place); MTU, MAC, state and the VTEP
addresses are set in place. Only the device named :data:`~.vxlan.DEVICE_NAME` is ever
touched: it is plainnet's by name, as ``flannel.1`` is Flannel's.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from plainnet.errors import PlainnetError
from plainnet.interfaces import add_address
from plainnet.ipam.types import IPAddress

log = logging.getLogger("plainnet.agent.vxlan")


@dataclass(frozen=True)
class VxlanDeviceSpec:
    name: str
    vni: int
    port: int
    local: IPAddress  # this node's underlay address
    uplink_ifindex: int
    mac: str
    mtu: int
    #: This node's VTEP addresses (pod subnets' network addresses, /32 and /128).
    addresses: tuple[IPv4Interface | IPv6Interface, ...]


def _identity(spec: VxlanDeviceSpec) -> dict[str, Any]:
    local = "vxlan_local" if spec.local.version == 4 else "vxlan_local6"
    return {
        "vxlan_id": spec.vni,
        "vxlan_port": spec.port,
        local: str(spec.local),
        "vxlan_link": spec.uplink_ifindex,
        "vxlan_learning": 0,
    }


def ensure_device(spec: VxlanDeviceSpec) -> int:
    """The device as ``spec`` says, up; returns its ifindex. Idempotent."""
    with IPRoute() as ipr:
        links = ipr.get_links(ifname=spec.name) if ipr.link_lookup(ifname=spec.name) else []
        wanted = _identity(spec)
        if links:
            link = links[0]
            kind = link.get(("linkinfo", "kind"))
            have = {key: link.get(("linkinfo", "data", key)) for key in wanted}
            if kind != "vxlan" or have != wanted:
                log.info("replacing %s: it is %s %s, want %s", spec.name, kind, have, wanted)
                ipr.link("del", index=link["index"])
                links = []
        if not links:
            try:
                ipr.link(
                    "add",
                    ifname=spec.name,
                    kind="vxlan",
                    address=spec.mac,
                    mtu=spec.mtu,
                    **wanted,
                )
            except NetlinkError as exc:
                what = f"cannot create VXLAN device {spec.name} (VNI {spec.vni}, port {spec.port})"
                if exc.code == errno.EEXIST:
                    raise PlainnetError(
                        f"{what}: another VXLAN device (flannel.1?) has this VNI and port; "
                        f"remove it, or choose another VNI for the cluster"
                    ) from None
                raise PlainnetError(
                    f"{what}: {os.strerror(exc.code)}; does the kernel have the vxlan module?"
                ) from None
            log.info(
                "created %s: VNI %d, UDP port %d, local %s, MAC %s, MTU %d",
                spec.name,
                spec.vni,
                spec.port,
                spec.local,
                spec.mac,
                spec.mtu,
            )
            links = ipr.get_links(ifname=spec.name)
        link = links[0]
        index = int(link["index"])
        if (link.get("mtu"), link.get("address"), link.get("state")) != (
            spec.mtu,
            spec.mac,
            "up",
        ):
            ipr.link("set", index=index, mtu=spec.mtu, address=spec.mac, state="up")
        have_addresses = {
            ip_interface(f"{entry.get('address')}/{entry['prefixlen']}")
            for entry in ipr.get_addr(index=index)
            if entry["scope"] == 0  # global: leave the IPv6 link-local address alone
        }
        for address in set(spec.addresses) - have_addresses:
            add_address(ipr, index, address)
        for address in have_addresses - set(spec.addresses):
            ipr.addr(
                "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
        return index


def remove_device(name: str) -> bool:
    """Delete the device if it exists (its neighbour and FDB entries, and the kernel's
    routes through it, go with it); returns whether there was one."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: gone meanwhile
                raise
        log.info("removed %s", name)
        return True
