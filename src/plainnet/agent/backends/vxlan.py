"""vxlan: reach peers through a VXLAN overlay where no plain route can (scenario 5).

Each node has one kernel VXLAN device, ``plainnet.vxlan`` (VNI 1, UDP port 8472 by
default — Flannel's). For every peer the agent keeps, all *permanent* and all its own
(nothing is learnt by flooding; the device has learning off):

- a route per pod subnet through the peer's VTEP address: for IPv4
  ``10.244.2.0/24 via 10.244.2.0 dev plainnet.vxlan onlink``, the subnet's network
  address, as Flannel (the device of node 10.244.2.0/24 holds 10.244.2.0/32); for
  IPv6 ``fd00:10:244:2::/64 via fe80::c70:aff:fefa:203 dev plainnet.vxlan``, the
  link-local address the peer's device has by its MAC (EUI-64). Not the subnet's
  address as for IPv4: the kernel refuses an IPv6 "onlink" gateway that another
  route covers through another device — exactly the case while a peer's subnet moves
  from a direct route to the overlay (a backend change, or ``auto`` re-deciding);
- a neighbour entry ``<peer VTEP address> lladdr <peer VTEP MAC>`` — no ARP or ND;
- an FDB entry ``<peer VTEP MAC> dst <peer node address>`` — where to send the frame.

One device carries IPv4 and IPv6 pod subnets; the *underlay* — the family VXLAN's
UDP packets travel in — is that of the node's first address, IPv4 or IPv6.

The VTEP MAC: on the etcd datastore each node publishes it in its lease's
``BackendData`` exactly as flanneld does (``{"VNI": 1, "VtepMAC": ...}``), so plainnet
and flanneld vxlan nodes interoperate. plainnet nodes set their device's MAC to
:func:`derived_mac` of their node address, which every peer can compute too — so on the
Kubernetes datastore nothing needs to be published and the agent needs no write access.

``auto`` (Flannel's ``DirectRouting``): a peer whose address is on-link gets the plain
host-gw route, decided per peer subnet on every pass; only the others use the overlay.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface
from typing import TypeVar

from plainnet.agent.backends.hostgw import direct_route
from plainnet.agent.reconcile import DesiredRoute, Vtep
from plainnet.agent.routing import LocalNetwork, Routing
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPAddress, IPNetwork

NAME = "vxlan"
K = TypeVar("K")
V = TypeVar("V")
DEVICE_NAME = "plainnet.vxlan"

#: Bytes VXLAN adds to every packet: outer IP (20 / 40) + UDP 8 + VXLAN 8 + inner
#: Ethernet 14. The device and the pods get the underlay MTU minus this, so a full-size
#: pod packet still fits the underlay once encapsulated.
OVERHEAD = {4: 50, 6: 70}

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def derived_mac(address: IPAddress) -> str:
    """The VTEP MAC of the node at ``address``: locally administered, unicast, the same
    on every node that computes it. IPv4: ``0e:70`` and the four address bytes (readable
    in ``bridge fdb``: 10.250.1.2 is ``0e:70:0a:fa:01:02``). IPv6: 46 bits of the
    address's SHA-256, since 128 bits do not fit."""
    if address.version == 4:
        raw = bytes([0x0E, 0x70]) + address.packed
    else:
        digest = hashlib.sha256(address.packed).digest()
        raw = bytes([(digest[0] & 0xFC) | 0x02]) + digest[1:6]
    return raw.hex(":")


def vtep_address(subnet: IPNetwork) -> IPAddress:
    """A node's VTEP address in a pod subnet: the network address, which the CNI plugin
    never gives a pod (the gateway is the first address after it). The device holds it,
    so traffic the node itself sends to remote pods has a source they can answer."""
    return subnet.network_address


def link_local(mac: str) -> IPv6Address:
    """The EUI-64 link-local address of an interface with ``mac`` (RFC 4291, App. A)."""
    raw = bytes.fromhex(mac.replace(":", ""))
    interface_id = bytes([raw[0] ^ 0x02]) + raw[1:3] + b"\xff\xfe" + raw[3:6]
    return IPv6Address(b"\xfe\x80" + bytes(6) + interface_id)


def vtep_gateway(subnet: IPNetwork, vtep: Vtep) -> IPAddress:
    """The gateway of a route to a peer's ``subnet`` through the overlay."""
    return vtep_address(subnet) if subnet.version == 4 else link_local(vtep.mac)


class VtepError(ValueError):
    """A peer record this node cannot reach over VXLAN; ``reason`` is the refusal's
    metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def peer_vtep(peer: PeerRecord, routing: Routing) -> Vtep:
    """Where ``peer``'s VXLAN packets go; :class:`VtepError` says why nowhere."""
    underlay = peer.address_for(routing.underlay_version)
    if underlay is None:
        raise VtepError(
            "family",
            f"it has no IPv{routing.underlay_version} node address, and this node's "
            f"VXLAN underlay is IPv{routing.underlay_version}",
        )
    # flanneld publishes the VTEP of its IPv6-underlay device as BackendV6Data; the
    # other family's data is the fallback (a single-stack Flannel or plainnet node).
    if routing.underlay_version == 6:
        data = peer.backend_data_v6 or peer.backend_data
    else:
        data = peer.backend_data or peer.backend_data_v6
    vni = data.get("VNI")
    if vni is not None and vni != routing.vni:
        raise VtepError("backend", f"it uses VXLAN VNI {vni!r}, this node uses {routing.vni}")
    published = data.get("VtepMAC")
    if published is None:
        return Vtep(derived_mac(underlay), underlay)
    mac = str(published).lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise VtepError("unparseable", f"VtepMAC {published!r} is not a unicast MAC")
    return Vtep(mac, underlay)


def desired_routes(
    peers: Iterable[PeerRecord], local: list[LocalNetwork], routing: Routing
) -> dict[IPNetwork, DesiredRoute]:
    routes: dict[IPNetwork, DesiredRoute] = {}
    direct = routing.backend == "auto"
    for peer in peers:
        vtep = peer_vtep(peer, routing)
        for subnet in peer.subnets:
            route = direct_route(peer, subnet, local) if direct else None
            routes[subnet] = route or DesiredRoute(
                subnet, vtep_gateway(subnet, vtep), routing.overlay_ifindex, peer.node, vtep
            )
    return routes


@dataclass
class OverlayEntries:
    """The neighbour and FDB entries of the VXLAN device: what the kernel holds (read
    back) or should hold (kept by :class:`~plainnet.agent.peer_view.PeerView` from the
    desired routes)."""

    neighbours: dict[IPAddress, str]  # VTEP address -> MAC
    fdb: dict[str, frozenset[IPAddress]]  # MAC -> underlay destination(s)


@dataclass
class OverlayPlan:
    """Applied in field order: neighbours and FDB entries are set before routes point at
    them (a MAC whose destination changes is cleared just before it is set again);
    stale entries go after the routes that used them."""

    set_neighbours: list[tuple[IPAddress, str]] = field(default_factory=list)
    reset_fdb: list[str] = field(default_factory=list)  # MACs: all their destinations
    set_fdb: list[tuple[str, IPAddress]] = field(default_factory=list)
    delete_fdb: list[str] = field(default_factory=list)
    delete_neighbours: list[IPAddress] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.set_neighbours,
                self.reset_fdb,
                self.set_fdb,
                self.delete_fdb,
                self.delete_neighbours,
            )
        )

    def summary(self) -> str:
        return (
            f"+{len(self.set_neighbours)}/-{len(self.delete_neighbours)} neighbours, "
            f"+{len(self.set_fdb)}/-{len(self.delete_fdb)} FDB entries"
        )


def plan_entries(
    desired: OverlayEntries,
    kernel: OverlayEntries,
    touched: tuple[set[IPAddress], set[str]] | None = None,
) -> OverlayPlan:
    """The difference, as dict operations: O(n), or O(changes) when ``touched`` names
    the only neighbour addresses and MACs that can differ. A MAC whose kernel entry has
    a wrong or an extra destination is cleared and set again, so exactly the desired one
    remains."""
    plan = OverlayPlan()
    addresses = (
        desired.neighbours.keys() | kernel.neighbours.keys() if touched is None else touched[0]
    )
    plan.set_neighbours, plan.delete_neighbours = _differences(
        addresses, desired.neighbours, kernel.neighbours
    )
    macs = desired.fdb.keys() | kernel.fdb.keys() if touched is None else touched[1]
    changed, plan.delete_fdb = _differences(macs, desired.fdb, kernel.fdb)
    for mac, destinations in changed:
        if kernel.fdb.get(mac):
            plan.reset_fdb.append(mac)
        plan.set_fdb.extend((mac, destination) for destination in sorted(destinations))
    return plan


def _differences(
    keys: Iterable[K], desired: Mapping[K, V], kernel: Mapping[K, V]
) -> tuple[list[tuple[K, V]], list[K]]:
    """Of ``keys``: those whose wanted value the kernel lacks (with that value), and
    those the kernel holds but nobody wants."""
    changed, unwanted = [], []
    for key in keys:
        want = desired.get(key)
        if want is None:
            if key in kernel:
                unwanted.append(key)
        elif want != kernel.get(key):
            changed.append((key, want))
    return changed, unwanted


def apply_entries(plan: OverlayPlan, kernel: OverlayEntries) -> None:
    """Update a cached view of the kernel's entries with what an applied plan did."""
    for address, mac in plan.set_neighbours:
        kernel.neighbours[address] = mac
    for address in plan.delete_neighbours:
        kernel.neighbours.pop(address, None)
    for mac in plan.reset_fdb + plan.delete_fdb:
        kernel.fdb.pop(mac, None)
    for mac, destination in plan.set_fdb:
        kernel.fdb[mac] = kernel.fdb.get(mac, frozenset()) | {destination}


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


def device_mtu(uplink_mtu: int, underlay_version: int) -> int:
    return uplink_mtu - OVERHEAD[underlay_version]
