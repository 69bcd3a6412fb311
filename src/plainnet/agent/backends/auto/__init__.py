"""auto: host-gw where a peer is on-link, vxlan everywhere else — Flannel's vxlan
backend with ``DirectRouting``.

Composed from the two, not a third copy: a peer must be reachable over the overlay
(vxlan's checks), and each of its pod subnets gets host-gw's direct route if the
peer's address of that family is on a network of this node, else vxlan's overlay
route. Decided per subnet on every pass, so a node whose networks change re-decides.
``auto`` nodes publish ``vxlan`` records and interoperate with vxlan nodes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from plainnet.agent.backends.hostgw import direct_routes
from plainnet.agent.backends.vxlan import VxlanBackend
from plainnet.agent.backends.vxlan import from_options as vxlan_options
from plainnet.agent.kernel_model import PeerState
from plainnet.agent.local_networks import LocalNetwork
from plainnet.datastore.records import PeerRecord


@dataclass(frozen=True, eq=True)
class AutoBackend(VxlanBackend):
    name = "auto"

    def peer_state(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerState:
        direct = direct_routes(peer, peer.subnets, local)
        overlay = self.overlay_state(peer, [s for s in peer.subnets if s not in direct], links)
        return PeerState({**overlay.routes, **direct}, overlay.neighbours, overlay.fdb)


def from_options(options: dict[str, object]) -> AutoBackend:
    chosen = vxlan_options(options)
    return AutoBackend(vni=chosen.vni, port=chosen.port)
