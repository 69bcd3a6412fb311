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
- ``duplicate-address``, ``duplicate-mac``: a node address (or VTEP MAC) an earlier
  claim of another node holds; the earlier claim wins.
- ``mac``: a VTEP MAC that is all zeros or this node's own.
- ``key-not-canonical``: a key the canonical writer would not produce (trailing
  characters, a zero-padded prefix length, ...).
- ``prefix-length``: a subnet whose prefix length is not the cluster's node subnet
  length of its family.
- ``address``: a node address no route or tunnel may point at: this node's own, the
  network or broadcast address of one of its networks, a pod address (inside the
  cluster CIDR), loopback, multicast, link-local, unspecified.

Everything a peer wrote and the log line repeats is escaped and capped
(:func:`printable`): a newline cannot forge a line, a megabyte cannot become one.

The generic checks are here; what a backend needs of a peer (host-gw: a gateway of
each subnet's family, on-link; vxlan and auto: a node address of the underlay family,
the same VNI, a unicast VTEP MAC) is its own :meth:`~.backends.base.Backend.check_peer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_network
from operator import itemgetter

from plainnet.agent.backends.base import RoutingContext
from plainnet.agent.local_networks import LocalNetwork, node_networks
from plainnet.datastore.records import InvalidRecord, PeerRecord, Record
from plainnet.ipam.types import IPAddress, IPNetwork, address_span
from plainnet.text import LOG_LIMIT, printable

__all__ = ["Refusal", "Validation", "check_record", "printable", "validate_peers"]


@dataclass(frozen=True)
class Refusal:
    key: str
    node: str
    reason: str  # metric label
    detail: str  # the log line's explanation, naming the value

    def log_line(self) -> str:
        return (
            f"refused peer record of node {printable(self.node)} ({printable(self.key)}): "
            f"{printable(self.detail, 2 * LOG_LIMIT)}"
        )


@dataclass(frozen=True)
class Validation:
    accepted: list[PeerRecord]
    refusals: list[Refusal]
    #: The identities of every record that reached the duplicate check, by key.
    identities: dict[str, list[tuple[str, object]]] = field(default_factory=dict)
    #: Per-record results, for the next rebuild (:func:`validate_peers`).
    verdicts: dict[str, RecordVerdict] = field(default_factory=dict)


#: What validation found out about one record object, kept between rebuilds: the record
#: (compared by identity: records are immutable and an unchanged one stays the same
#: object), its refusal or None, and its identities.
RecordVerdict = tuple[Record, "Refusal | None", "list[tuple[str, object]] | None"]


def validate_peers(
    records: Mapping[str, Record],
    own: PeerRecord,
    cluster_cidrs: list[IPNetwork],
    context: RoutingContext,
    node_prefixes: Mapping[int, int] | None = None,
    verdicts: Mapping[str, RecordVerdict] | None = None,
) -> Validation:
    """Every record checked on its own, then overlaps and duplicates resolved among all.
    ``verdicts``: a previous validation's per-record results under the same own record,
    cluster and context; a record that is still the same object is not checked again
    (the checks are pure) — everything that relates records to each other is."""
    refusals: list[Refusal] = []
    candidates: list[PeerRecord] = []
    known = verdicts or {}
    found: dict[str, RecordVerdict] = {}
    for key, record in records.items():
        if record.key == own.key:
            continue
        cached = known.get(key)
        if cached is not None and cached[0] is record:
            verdict = cached
        else:
            refusal = check_record(record, own, cluster_cidrs, context, node_prefixes)
            mine = identities(record, context) if refusal is None else None
            verdict = (record, refusal, mine)  # type: ignore[assignment]
        found[key] = verdict
        if verdict[1] is not None:
            refusals.append(verdict[1])
        else:
            candidates.append(record)  # type: ignore[arg-type]
    accepted, overlaps = _resolve_overlaps(candidates, own)
    ids = {r.key: found[r.key][2] or [] for r in accepted}
    accepted, duplicates = _resolve_duplicates(accepted, ids)
    return Validation(accepted, refusals + overlaps + duplicates, ids, found)


def identities(record: PeerRecord, context: RoutingContext) -> list[tuple[str, object]]:
    """What no two accepted peers may share, as (kind, value): node addresses, and what
    the backend adds (a VTEP MAC). An address is (version, int): ``ipaddress`` objects
    hash in Python code, and a rebuild hashes 20,000 of them several times."""
    found: list[tuple[str, object]] = [("address", (a.version, int(a))) for a in record.addresses]
    found.extend(context.backend.identities(record, context.links))
    return found


def _shown(kind: str, value: object) -> str:
    if kind == "address" and isinstance(value, tuple):
        version, number = value
        return str(IPv4Address(number) if version == 4 else IPv6Address(number))
    return str(value)


def _resolve_duplicates(
    accepted: list[PeerRecord], found: Mapping[str, list[tuple[str, object]]]
) -> tuple[list[PeerRecord], list[Refusal]]:
    """Refuse every record that shares an address or MAC with an earlier claim."""
    holders: dict[tuple[str, object], PeerRecord] = {}
    kept, refusals = [], []
    for record in sorted(accepted, key=lambda r: (r.claimed_at, r.key)):
        mine = found[record.key]
        clash = next((i for i in mine if i in holders), None)
        if clash is None:
            holders.update(dict.fromkeys(mine, record))
            kept.append(record)
            continue
        kind, value = clash
        holder = holders[clash]
        refusals.append(
            Refusal(
                record.key,
                record.node,
                f"duplicate-{kind}",
                f"its {kind} {_shown(kind, value)} is node {holder.node}'s ({holder.key}), "
                "claimed earlier",
            )
        )
    order = {r.key: i for i, r in enumerate(accepted)}
    kept.sort(key=lambda r: order[r.key])
    return kept, refusals


def check_record(
    record: Record,
    own: PeerRecord,
    cluster_cidrs: list[IPNetwork],
    context: RoutingContext,
    node_prefixes: Mapping[int, int] | None = None,
) -> Refusal | None:
    """Why ``record`` may not become kernel state, or None. ``node_prefixes``: the
    cluster's node subnet length per family, where the datastore knows it."""
    if isinstance(record, InvalidRecord):
        return Refusal(record.key, "?", record.label, f"cannot parse it: {record.reason}")
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
    subnet_rules = _rules(own, cluster_cidrs, context, node_prefixes)[1]
    for subnet in record.subnets:
        found = subnet_rules.problem(subnet)
        if found is not None:
            return refuse(*found)
    address_rules = _rules(own, cluster_cidrs, context, node_prefixes)[0]
    for address in record.addresses:
        problem = address_rules.problem(address)
        if problem is not None:
            return refuse("address", f"node address {address} is {problem}")
    problem = backend.check_peer(record, context.local, context.links)
    if problem is not None:
        return refuse(problem.reason, problem.detail)
    return None


#: Ranges no node address may lie in, per family: (network, what it is).
_NEVER = {
    4: (
        (ip_network("0.0.0.0/32"), "unspecified"),
        (ip_network("127.0.0.0/8"), "a loopback address"),
        (ip_network("169.254.0.0/16"), "link-local"),
        (ip_network("224.0.0.0/4"), "a multicast address"),
        (ip_network("255.255.255.255/32"), "the broadcast address"),
    ),
    6: (
        (ip_network("::/128"), "unspecified"),
        (ip_network("::1/128"), "a loopback address"),
        (ip_network("fe80::/10"), "link-local"),
        (ip_network("ff00::/8"), "a multicast address"),
    ),
}


class _AddressRules:
    """The node-address checks of :func:`check_record`, prepared once per (own record, cluster,
    local networks): one dict lookup and a handful of integer comparisons a record."""

    def __init__(
        self, own: PeerRecord, cluster_cidrs: list[IPNetwork], local: tuple[LocalNetwork, ...]
    ) -> None:
        #: (version, int) -> what it is: ints hash in C, ``ipaddress`` objects in Python.
        self.exact: dict[tuple[int, int], str] = {}

        def note(address: IPAddress, what: str) -> None:
            self.exact[(address.version, int(address))] = what

        for network in local:
            net = network.network
            if net.num_addresses > 2:
                note(net.network_address, f"the network address of {net}")
                if net.version == 4:
                    note(net.broadcast_address, f"the broadcast address of {net}")
            note(network.address, f"this node's own address (on {network.ifname})")
        for address in own.addresses:
            note(address, "this node's own address")
        self.ranges: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for version, ranges in _NEVER.items():
            for net, what in ranges:
                self.ranges[version].append(
                    (int(net.network_address), int(net.broadcast_address), what)
                )
        self.pods: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for cidr in cluster_cidrs:
            self.pods[cidr.version].append(
                (
                    int(cidr.network_address),
                    int(cidr.broadcast_address),
                    f"inside the cluster CIDR {cidr} (a pod's address)",
                )
            )
        # A cluster CIDR drawn around the node network (10.0.0.0/8 with nodes on
        # 10.250.0.0/24) is unusual but works: addresses on such a node network are
        # nodes, not pods.
        self.node_networks = [
            (*address_span(n.network), n.network.version)
            for n in node_networks(local, cluster_cidrs, own.subnets)
        ]

    def problem(self, address: IPAddress) -> str | None:
        value, version = int(address), address.version
        found = self.exact.get((version, value))
        if found is not None:
            return found
        for start, end, what in self.ranges[version]:
            if start <= value <= end:
                return what
        for start, end, what in self.pods[version]:
            if start <= value <= end and not any(
                v == version and low <= value <= high for low, high, v in self.node_networks
            ):
                return what
        return None


class _SubnetRules:
    """The subnet checks of :func:`check_record`, prepared once per (own record, cluster,
    local networks, node prefixes) as integer spans: at 65,536 records a pass, building
    ``ipaddress`` spans per record and check was most of the validation's time."""

    def __init__(
        self,
        own: PeerRecord,
        cluster_cidrs: list[IPNetwork],
        local: tuple[LocalNetwork, ...],
        node_prefixes: Mapping[int, int] | None,
    ) -> None:
        self.cluster = {c.version: (c, *address_span(c)) for c in reversed(cluster_cidrs)}
        self.prefixes = dict(node_prefixes or {})
        #: What no peer subnet may overlap: (version, start, end, reason, what it is).
        self.taken = [
            (
                n.network.version,
                *address_span(n.network),
                "local-network",
                f"network {n.network} of this node ({n.ifname})",
            )
            for n in local
        ] + [
            (s.version, *address_span(s), "overlap", f"this node's subnet {s}") for s in own.subnets
        ]

    def problem(self, subnet: IPNetwork) -> tuple[str, str] | None:
        version = subnet.version
        found = self.cluster.get(version)
        if found is None:
            return (
                "family",
                f"subnet {subnet} is IPv{version}, but the cluster has no IPv{version} CIDR",
            )
        cluster, low, high = found
        start, end = address_span(subnet)
        if not low <= start <= end <= high:
            return "outside-cluster", f"subnet {subnet} is outside the cluster CIDR {cluster}"
        wanted = self.prefixes.get(version)
        if wanted is not None and subnet.prefixlen != wanted:
            return (
                "prefix-length",
                f"subnet {subnet} is a /{subnet.prefixlen}, the cluster's node subnets "
                f"are /{wanted}",
            )
        for other_version, other_start, other_end, reason, what in self.taken:
            if other_version == version and other_start <= end and start <= other_end:
                return reason, f"subnet {subnet} overlaps {what}"
        return None


#: The rules of the last (own, cluster_cidrs, context, node_prefixes), compared by
#: identity: a pass checks every record against the same objects. One tuple, read and
#: replaced whole, so threads (the loop, the kernel thread, a resync's rebuild) never
#: see half of an entry.
_last_rules: tuple = (None, None, None, None, None)


def _rules(
    own: PeerRecord,
    cluster_cidrs: list[IPNetwork],
    context: RoutingContext,
    node_prefixes: Mapping[int, int] | None,
) -> tuple[_AddressRules, _SubnetRules]:
    global _last_rules
    last = _last_rules
    if (
        last[0] is own
        and last[1] is cluster_cidrs
        and last[2] is context
        and last[3] is node_prefixes
    ):
        return last[4]
    rules = (
        _AddressRules(own, cluster_cidrs, context.local),
        _SubnetRules(own, cluster_cidrs, context.local, node_prefixes),
    )
    _last_rules = (own, cluster_cidrs, context, node_prefixes, rules)
    return rules


def _resolve_overlaps(
    candidates: list[PeerRecord], own: PeerRecord
) -> tuple[list[PeerRecord], list[Refusal]]:
    """Refuse every record that overlaps an earlier claim. Sorting the subnets by start
    address puts overlapping ones next to each other, so only runs of overlapping
    subnets (normally of length one) need a closer look: O(n log n) in all."""
    spans = sorted(
        ((*address_span(s), s.version, r) for r in candidates for s in r.subnets),
        key=itemgetter(2, 0),
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
