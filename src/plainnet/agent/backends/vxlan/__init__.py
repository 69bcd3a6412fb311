"""vxlan: reach peers through a VXLAN overlay where no plain route can (the selection
guide's "nodes not on one subnet").

Each node has one kernel VXLAN device, ``plainnet.vxlan`` (VNI 1, UDP port 8472 by
default — Flannel's), with learning off. For every peer the backend wants, all
*permanent* and all on its own device (nothing is learnt by flooding):

- a route per pod subnet through the peer's VTEP address (:func:`.vtep.vtep_gateway`):
  ``10.244.2.0/24 via 10.244.2.0 dev plainnet.vxlan onlink``, or for IPv6
  ``fd00:10:244:2::/64 via fe80::c70:aff:fefa:203 dev plainnet.vxlan``;
- a neighbour entry ``<peer VTEP address> lladdr <peer VTEP MAC>`` — no ARP or ND;
- an FDB entry ``<peer VTEP MAC> dst <peer node address>`` — where to send the frame.

Devices follow Flannel's dual-stack layout, so plainnet and flanneld nodes reach each
other in both families:

- **dual underlay** — the node has an IPv4 and an IPv6 address and IPv6 pod subnets:
  ``plainnet.vxlan`` on the IPv4 underlay carries IPv4 pods and ``plainnet.vxlan6`` on
  the IPv6 underlay carries IPv6 pods (flanneld's ``flannel.1`` and ``flannel-v6.1``).
  The record carries both VTEPs: ``BackendData`` and ``BackendV6Data``, each with its
  device's ``VtepMAC``, and ``PublicIPv6``.
- **single underlay** — the node has addresses of one family: ``plainnet.vxlan`` on it
  carries the pods of every family (the *underlay*, the family VXLAN's UDP packets
  travel in, is that of the node's address).

A peer's IPv6 pods go over ``plainnet.vxlan6`` when this node has it and the peer has
an IPv6 address, else over ``plainnet.vxlan`` to the peer's primary VTEP. The devices
are made with pyroute2 (:mod:`.device`), loaded only when a device is handled.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_interface

from plainnet.agent.backends.base import (
    Backend,
    LinkLookup,
    NodeIdentity,
    PeerProblem,
    PublishedData,
)
from plainnet.agent.backends.options import int_option, unknown_options
from plainnet.agent.backends.vxlan.vtep import (
    Vtep,
    VtepError,
    derived_mac,
    device_mtu,
    peer_vtep,
    vtep_address,
    vtep_gateway,
)
from plainnet.agent.kernel_model import DesiredRoute, PeerState
from plainnet.agent.local_networks import LocalNetwork
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPNetwork

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_VNI",
    "DEVICE_NAME",
    "DEVICE_NAME_V6",
    "Vtep",
    "VxlanBackend",
    "VxlanLinks",
    "derived_mac",
    "device_mtu",
]

DEVICE_NAME = "plainnet.vxlan"
#: The IPv6-underlay device of a dual-underlay node (IFNAMSIZ: 15 characters at most).
DEVICE_NAME_V6 = "plainnet.vxlan6"
#: Flannel's defaults for its vxlan backend (the Linux default port 8472, VNI 1).
DEFAULT_VNI = 1
DEFAULT_PORT = 8472
MAX_VNI = 2**24 - 1


@dataclass(frozen=True)
class VxlanLinks:
    """The devices once they exist: the primary one (``ifindex``, the family its packets
    travel in, this node's VTEP MAC on it) and, on a dual-underlay node, the IPv6
    one (``v6_ifindex`` 0: none)."""

    ifindex: int
    underlay_version: int
    mac: str = ""  # this node's own VTEP MAC
    v6_ifindex: int = 0
    v6_mac: str = ""

    def devices(self) -> frozenset[int]:
        return frozenset(i for i in (self.ifindex, self.v6_ifindex) if i)


def dual_underlay(node: NodeIdentity) -> bool:
    """Whether this node runs Flannel's dual-stack layout: an IPv4 and an IPv6 address,
    and (once claimed) an IPv6 pod subnet."""
    families = {a.version for a in node.addresses}
    pods = {s.version for s in node.subnets}
    return families >= {4, 6} and (not pods or 6 in pods)


def _underlay(node: NodeIdentity, version: int):
    return next(a for a in node.addresses if a.version == version)


@dataclass(frozen=True, eq=True)
class VxlanBackend(Backend):
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT

    name = "vxlan"
    record_type = "vxlan"
    device_names = (DEVICE_NAME, DEVICE_NAME_V6)

    def published_data(self, node: NodeIdentity) -> PublishedData:
        def data(address) -> dict:
            return {"VNI": self.vni, "VtepMAC": derived_mac(address)}

        if dual_underlay(node):
            return PublishedData(data(_underlay(node, 4)), data(_underlay(node, 6)))
        underlay = node.addresses[0]
        if underlay.version == 6:
            return PublishedData({}, data(underlay))
        return PublishedData(data(underlay), {})

    def pod_mtu(self, node: NodeIdentity) -> int:
        # one MTU for a pod's interface: what fits the narrower encapsulation
        versions = (4, 6) if dual_underlay(node) else (node.addresses[0].version,)
        return min(device_mtu(node.uplink_mtu, v) for v in versions)

    def prepare(self, node: NodeIdentity, kernel: LinkLookup) -> VxlanLinks:
        from plainnet.agent.backends.vxlan.device import (
            VxlanDeviceSpec,
            ensure_device,
            remove_device,
        )

        dual = dual_underlay(node)

        def spec(name: str, underlay, subnets) -> VxlanDeviceSpec:
            return VxlanDeviceSpec(
                name=name,
                vni=self.vni,
                port=self.port,
                local=underlay,
                uplink_ifindex=node.uplink.ifindex,
                mac=derived_mac(underlay),
                mtu=device_mtu(node.uplink_mtu, underlay.version),
                addresses=tuple(ip_interface(vtep_address(s)) for s in subnets),
            )

        underlay = _underlay(node, 4) if dual else node.addresses[0]
        carried = [s for s in node.subnets if not dual or s.version == 4]
        primary = spec(DEVICE_NAME, underlay, carried)
        links = VxlanLinks(ensure_device(primary), underlay.version, primary.mac)
        if not dual:
            if kernel.link_index(DEVICE_NAME_V6):
                remove_device(DEVICE_NAME_V6)  # the node was dual-underlay before
            return links
        v6 = spec(DEVICE_NAME_V6, _underlay(node, 6), [s for s in node.subnets if s.version == 6])
        return replace(links, v6_ifindex=ensure_device(v6), v6_mac=v6.mac)

    def remove(self, kernel: LinkLookup) -> list[str]:
        # The cheap lean-netlink lookup first: pyroute2 is loaded only if there is one.
        present = [name for name in self.device_names if kernel.link_index(name)]
        if not present:
            return []
        from plainnet.agent.backends.vxlan.device import remove_device

        return [name for name in present if remove_device(name)]

    def entry_devices(self, links: Hashable) -> frozenset[int]:
        assert isinstance(links, VxlanLinks)
        return links.devices()

    def _paths(self, peer: PeerRecord, links: VxlanLinks) -> dict[int, tuple[int, str, Vtep]]:
        """Per pod family of ``peer``: (device, this node's MAC on it, the peer's VTEP).
        :class:`VtepError` says why a family cannot be reached."""
        paths = {}
        for version in sorted({s.version for s in peer.subnets}):
            if version == 6 and links.v6_ifindex and peer.address_for(6) is not None:
                paths[6] = (links.v6_ifindex, links.v6_mac, peer_vtep(peer, self.vni, 6))
            else:
                vtep = peer_vtep(peer, self.vni, links.underlay_version)
                paths[version] = (links.ifindex, links.mac, vtep)
        return paths

    def check_peer(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerProblem | None:
        assert isinstance(links, VxlanLinks)
        try:
            paths = self._paths(peer, links)
        except VtepError as exc:
            return PeerProblem(exc.reason, str(exc))
        for _, own_mac, vtep in paths.values():
            if vtep.mac == "00:00:00:00:00:00":
                return PeerProblem("mac", "its VtepMAC is all zeros")
            if vtep.mac == own_mac:
                return PeerProblem("mac", f"its VtepMAC {vtep.mac} is this node's own")
        return None

    def identities(self, peer: PeerRecord, links: Hashable) -> tuple[tuple[str, Hashable], ...]:
        # Two peers with one MAC: the later would re-point the earlier's FDB entry.
        assert isinstance(links, VxlanLinks)
        macs = dict.fromkeys(vtep.mac for _, _, vtep in self._paths(peer, links).values())
        return tuple(("mac", mac) for mac in macs)

    def peer_state(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerState:
        return self.overlay_state(peer, peer.subnets, links)

    def overlay_state(
        self, peer: PeerRecord, subnets: Iterable[IPNetwork], links: Hashable
    ) -> PeerState:
        """Routes for ``subnets`` of ``peer`` through the devices, and the neighbour and
        FDB entries that make their gateways reachable."""
        assert isinstance(links, VxlanLinks)
        paths = self._paths(peer, links)
        routes, neighbours, fdb = {}, [], {}
        for subnet in subnets:
            device, _, vtep = paths[subnet.version]
            gateway = vtep_gateway(subnet, vtep)
            routes[subnet] = DesiredRoute(
                subnet, gateway, device, peer.node, onlink=not gateway.is_link_local
            )
            neighbours.append(((device, gateway), vtep.mac))
            fdb[(device, vtep.mac)] = vtep.underlay
        return PeerState(routes, tuple(neighbours), tuple(fdb.items()))


def from_options(options: dict[str, object]) -> VxlanBackend:
    unknown_options("vxlan", options, ("vni", "port"))
    return VxlanBackend(
        vni=int_option("vxlan", options, "vni", "VXLAN VNI", DEFAULT_VNI, MAX_VNI),
        port=int_option("vxlan", options, "port", "VXLAN UDP port", DEFAULT_PORT, 65535),
    )
