"""Which peer records the agent may act on. Pure: records in, decisions out.

Every record is checked before it can become kernel state; a refused record never
becomes a route. Refusal reasons, each with its own metric label:

- ``unparseable``: the datastore holds something that is not a peer record.
- ``backend``: the peer runs a backend this node cannot route to, or a VXLAN setup
  (VNI, VTEP MAC) it cannot talk to.
- ``outside-cluster``: a subnet outside the cluster CIDR of its family.
- ``family``: a subnet with no address of its family to route it through.
- ``local-network``: a subnet that overlaps a network of this node (it would capture
  the node's own traffic).
- ``overlap``: a subnet overlapping this node's subnet or another peer's; of two
  overlapping peers the earlier claim wins.
- ``not-on-link``: host-gw needs the peer's address on a network of this node.

The generic checks are here; what a backend needs of a peer (host-gw: a gateway of
each subnet's family, on-link; vxlan and auto: a node address of the underlay family,
the same VNI, a unicast VTEP MAC) is its own :meth:`~.backends.base.Backend.check_peer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from plainnet.agent.backends.base import RoutingContext
from plainnet.datastore.records import InvalidRecord, PeerRecord, Record
from plainnet.ipam.types import IPNetwork

__all__ = ["Refusal", "Validation", "check_record", "validate_peers"]


@dataclass(frozen=True)
class Refusal:
    key: str
    node: str
    reason: str  # metric label
    detail: str  # the log line's explanation, naming the value

    def log_line(self) -> str:
        return f"refused peer record of node {self.node} ({self.key}): {self.detail}"


@dataclass(frozen=True)
class Validation:
    accepted: list[PeerRecord]
    refusals: list[Refusal]


def validate_peers(
    records: Mapping[str, Record],
    own: PeerRecord,
    cluster_cidrs: list[IPNetwork],
    context: RoutingContext,
) -> Validation:
    refusals: list[Refusal] = []
    candidates: list[PeerRecord] = []
    for record in records.values():
        if record.key == own.key:
            continue
        refusal = check_record(record, own, cluster_cidrs, context)
        if refusal is not None:
            refusals.append(refusal)
        else:
            candidates.append(record)  # type: ignore[arg-type]
    accepted, overlaps = _resolve_overlaps(candidates, own)
    return Validation(accepted, refusals + overlaps)


def check_record(
    record: Record,
    own: PeerRecord,
    cluster_cidrs: list[IPNetwork],
    context: RoutingContext,
) -> Refusal | None:
    if isinstance(record, InvalidRecord):
        return Refusal(record.key, "?", "unparseable", f"cannot parse it: {record.reason}")
    node = record.node

    def refuse(reason: str, detail: str) -> Refusal:
        return Refusal(record.key, node, reason, detail)

    backend = context.backend
    if record.backend != backend.record_type:
        return refuse(
            "backend",
            f"it uses backend {record.backend!r}, this node runs {backend.name!r}",
        )
    if not record.subnets:
        return refuse("unparseable", "it has no subnet")
    for subnet in record.subnets:
        cluster = next((c for c in cluster_cidrs if c.version == subnet.version), None)
        if cluster is None:
            return refuse(
                "family",
                f"subnet {subnet} is IPv{subnet.version}, but the cluster "
                f"has no IPv{subnet.version} CIDR",
            )
        if not subnet.subnet_of(cluster):  # type: ignore[arg-type]
            return refuse(
                "outside-cluster", f"subnet {subnet} is outside the cluster CIDR {cluster}"
            )
        for network in context.local:
            if network.network.overlaps(subnet):
                return refuse(
                    "local-network",
                    f"subnet {subnet} overlaps network {network.network} of this "
                    f"node ({network.ifname})",
                )
        for own_subnet in own.subnets:
            if own_subnet.overlaps(subnet):
                return refuse(
                    "overlap", f"subnet {subnet} overlaps this node's subnet {own_subnet}"
                )
    problem = backend.check_peer(record, context.local, context.links)
    if problem is not None:
        return refuse(problem.reason, problem.detail)
    return None


def _resolve_overlaps(
    candidates: list[PeerRecord], own: PeerRecord
) -> tuple[list[PeerRecord], list[Refusal]]:
    """Refuse every record that overlaps an earlier claim. Sorting the subnets by start
    address puts overlapping ones next to each other, so only runs of overlapping
    subnets (normally of length one) need a closer look: O(n log n) in all."""
    spans = sorted(
        (
            (int(s.network_address), int(s.broadcast_address), s.version, r)
            for r in candidates
            for s in r.subnets
        ),
        key=lambda span: (span[2], span[0]),
    )
    losers: dict[str, PeerRecord] = {}
    cluster: list[tuple[int, int, int, PeerRecord]] = []
    cluster_end = -1
    cluster_version = 0

    def settle(group: list[tuple[int, int, int, PeerRecord]]) -> None:
        if len(group) < 2:
            return
        winners: list[tuple[int, int]] = []
        for start, end, _, record in sorted(group, key=lambda s: (s[3].claimed_at, s[3].key)):
            if record.key in losers:
                continue
            if any(start <= w_end and w_start <= end for w_start, w_end in winners):
                losers[record.key] = record
            else:
                winners.append((start, end))

    for span in spans:
        start, end, version, _ = span
        if cluster and version == cluster_version and start <= cluster_end:
            cluster.append(span)
            cluster_end = max(cluster_end, end)
        else:
            settle(cluster)
            cluster, cluster_end, cluster_version = [span], end, version
    settle(cluster)
    accepted = [r for r in candidates if r.key not in losers]
    refusals = [
        Refusal(
            r.key,
            r.node,
            "overlap",
            f"subnet {', '.join(map(str, r.subnets))} overlaps an earlier claim of another node",
        )
        for r in losers.values()
    ]
    return accepted, refusals
