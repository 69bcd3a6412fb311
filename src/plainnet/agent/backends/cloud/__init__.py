"""cloud: the VPC routes pod subnets; the node installs no route to any peer.

The selection guide's cloud scenario: ``plainnet cloud-routes`` keeps the VPC's route
table equal to "each node's pod subnet -> that node's instance", so the cloud's router
carries pod traffic and a node sends it to its default gateway like any other packet.
On the node only the CNI server (bridge, addresses, masquerade to outside the cluster)
runs; peers are never refused, since none is routed here.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from plainnet.agent.backends.base import Backend, PeerProblem
from plainnet.agent.kernel_model import PeerState
from plainnet.agent.local_networks import LocalNetwork
from plainnet.datastore.records import PeerRecord


class CloudBackend(Backend):
    name = "cloud"
    record_type = "cloud"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CloudBackend)

    def __hash__(self) -> int:
        return hash(self.name)

    def check_peer(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerProblem | None:
        return None

    def peer_state(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerState:
        return PeerState({})


def from_options(options: dict[str, object]) -> CloudBackend:
    if options:
        from plainnet.agent.backends.options import unknown_options

        unknown_options("cloud", options)
    return CloudBackend()
