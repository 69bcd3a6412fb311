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

One device carries IPv4 and IPv6 pod subnets; the *underlay* — the family VXLAN's UDP
packets travel in — is that of the node's first address. The device itself is made
with pyroute2 (:mod:`.device`), loaded only when a device is handled.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
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
    "Vtep",
    "VxlanBackend",
    "VxlanLinks",
    "derived_mac",
    "device_mtu",
]

DEVICE_NAME = "plainnet.vxlan"
#: Flannel's defaults for its vxlan backend (the Linux default port 8472, VNI 1).
DEFAULT_VNI = 1
DEFAULT_PORT = 8472
MAX_VNI = 2**24 - 1


@dataclass(frozen=True)
class VxlanLinks:
    """The device once it exists, and the family its packets travel in (that of this
    node's first address; every node of a cluster uses the same)."""

    ifindex: int
    underlay_version: int
    mac: str = ""  # this node's own VTEP MAC


@dataclass(frozen=True, eq=True)
class VxlanBackend(Backend):
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT

    name = "vxlan"
    record_type = "vxlan"
    device_names = (DEVICE_NAME,)

    def published_data(self, node: NodeIdentity) -> PublishedData:
        underlay = node.addresses[0]
        data = {"VNI": self.vni, "VtepMAC": derived_mac(underlay)}
        return PublishedData({}, data) if underlay.version == 6 else PublishedData(data, {})

    def pod_mtu(self, node: NodeIdentity) -> int:
        return device_mtu(node.uplink_mtu, node.addresses[0].version)

    def prepare(self, node: NodeIdentity, kernel: LinkLookup) -> VxlanLinks:
        from plainnet.agent.backends.vxlan.device import VxlanDeviceSpec, ensure_device

        underlay = node.addresses[0]
        spec = VxlanDeviceSpec(
            name=DEVICE_NAME,
            vni=self.vni,
            port=self.port,
            local=underlay,
            uplink_ifindex=node.uplink.ifindex,
            mac=derived_mac(underlay),
            mtu=self.pod_mtu(node),
            addresses=tuple(ip_interface(vtep_address(s)) for s in node.subnets),
        )
        return VxlanLinks(ensure_device(spec), underlay.version, spec.mac)

    def remove(self, kernel: LinkLookup) -> list[str]:
        # The cheap lean-netlink lookup first: pyroute2 is loaded only if there is one.
        if not kernel.link_index(DEVICE_NAME):
            return []
        from plainnet.agent.backends.vxlan.device import remove_device

        return [DEVICE_NAME] if remove_device(DEVICE_NAME) else []

    def entry_devices(self, links: Hashable) -> frozenset[int]:
        assert isinstance(links, VxlanLinks)
        return frozenset((links.ifindex,))

    def check_peer(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerProblem | None:
        assert isinstance(links, VxlanLinks)
        try:
            vtep = peer_vtep(peer, self.vni, links.underlay_version)
        except VtepError as exc:
            return PeerProblem(exc.reason, str(exc))
        if vtep.mac == "00:00:00:00:00:00":
            return PeerProblem("mac", "its VtepMAC is all zeros")
        if vtep.mac == links.mac:
            return PeerProblem("mac", f"its VtepMAC {vtep.mac} is this node's own")
        return None

    def identities(self, peer: PeerRecord, links: Hashable) -> tuple[tuple[str, Hashable], ...]:
        # Two peers with one MAC: the later would re-point the earlier's FDB entry.
        assert isinstance(links, VxlanLinks)
        return (("mac", peer_vtep(peer, self.vni, links.underlay_version).mac),)

    def peer_state(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerState:
        return self.overlay_state(peer, peer.subnets, links)

    def overlay_state(
        self, peer: PeerRecord, subnets: Iterable[IPNetwork], links: Hashable
    ) -> PeerState:
        """Routes for ``subnets`` of ``peer`` through the device, and the neighbour and
        FDB entries that make their gateways reachable."""
        assert isinstance(links, VxlanLinks)
        vtep = peer_vtep(peer, self.vni, links.underlay_version)
        device = links.ifindex
        routes, neighbours = {}, []
        for subnet in subnets:
            gateway = vtep_gateway(subnet, vtep)
            routes[subnet] = DesiredRoute(
                subnet, gateway, device, peer.node, onlink=not gateway.is_link_local
            )
            neighbours.append(((device, gateway), vtep.mac))
        fdb = (((device, vtep.mac), vtep.underlay),) if routes else ()
        return PeerState(routes, tuple(neighbours), fdb)


def from_options(options: dict[str, object]) -> VxlanBackend:
    unknown_options("vxlan", options, ("vni", "port"))
    return VxlanBackend(
        vni=int_option("vxlan", options, "vni", "VXLAN VNI", DEFAULT_VNI, MAX_VNI),
        port=int_option("vxlan", options, "port", "VXLAN UDP port", DEFAULT_PORT, 65535),
    )
