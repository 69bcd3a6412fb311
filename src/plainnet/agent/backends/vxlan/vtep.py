"""VXLAN endpoints (VTEPs): where a peer's encapsulated frames go and how its pod
subnets are reached through the overlay. Pure.

Each node's device has a MAC :func:`derived_mac` of its node address, which every peer
can compute — so on the Kubernetes datastore nothing needs to be published. On etcd a
node also publishes it exactly as flanneld does (``BackendData: {"VNI", "VtepMAC"}``,
``BackendV6Data`` for an IPv6 underlay), and a published MAC wins over the derived one,
so plainnet and flanneld vxlan nodes interoperate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from ipaddress import IPv6Address

from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPAddress, IPNetwork

#: Bytes VXLAN adds to every packet: outer IP (20 / 40) + UDP 8 + VXLAN 8 + inner
#: Ethernet 14. The device and the pods get the underlay MTU minus this, so a full-size
#: pod packet still fits the underlay once encapsulated.
OVERHEAD = {4: 50, 6: 70}

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Vtep:
    """A peer's VXLAN endpoint: its device's MAC and the node address frames go to."""

    mac: str
    underlay: IPAddress


class VtepError(ValueError):
    """A peer record this node cannot reach over VXLAN; ``reason`` is the refusal's
    metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


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
    """The gateway of a route to a peer's ``subnet`` through the overlay: for IPv4 the
    subnet's network address (the peer's device holds it, as with Flannel); for IPv6
    the link-local address the peer's device has by its MAC — the kernel refuses an IPv6
    "onlink" gateway that another route covers through another device, exactly the case
    while a subnet moves from a direct route to the overlay."""
    return vtep_address(subnet) if subnet.version == 4 else link_local(vtep.mac)


def peer_vtep(peer: PeerRecord, vni: int, underlay_version: int) -> Vtep:
    """Where ``peer``'s VXLAN packets go; :class:`VtepError` says why nowhere."""
    underlay = peer.address_for(underlay_version)
    if underlay is None:
        raise VtepError(
            "family",
            f"it has no IPv{underlay_version} node address, and this node's "
            f"VXLAN underlay is IPv{underlay_version}",
        )
    # flanneld publishes the VTEP of its IPv6-underlay device as BackendV6Data; the
    # other family's data is the fallback (a single-stack Flannel or plainnet node).
    if underlay_version == 6:
        data = peer.backend_data_v6 or peer.backend_data
    else:
        data = peer.backend_data or peer.backend_data_v6
    peer_vni = data.get("VNI")
    if peer_vni is not None and peer_vni != vni:
        raise VtepError("backend", f"it uses VXLAN VNI {peer_vni!r}, this node uses {vni}")
    published = data.get("VtepMAC")
    if published is None:
        return Vtep(derived_mac(underlay), underlay)
    mac = str(published).lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise VtepError("unparseable", f"VtepMAC {published!r} is not a unicast MAC")
    return Vtep(mac, underlay)


def device_mtu(uplink_mtu: int, underlay_version: int) -> int:
    return uplink_mtu - OVERHEAD[underlay_version]
