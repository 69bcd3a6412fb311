"""(policies, pods, namespaces, this node) -> the whole ruleset of ``inet plainnet-policy``.
Pure: the same objects always give the same text, so a restart, a missed event or a
hand-edited table converges by applying it again.

The table, for this node's pods only (a packet is judged where it enters or leaves its
pod: the source pod's node checks egress, the destination pod's node ingress)::

    chain forward   hook forward: ct established,related accept
                                  ip saddr vmap @egress4      (and ip6 / @egress6)
                                  ip daddr vmap @ingress4     (and ip6 / @ingress6)
    chain input     hook input:   the same egress maps (a pod's traffic to its node)
    map egress4     pod address -> jump eg-<h>     one element per pod of this node
    chain eg-<h>    one rule per (peers, ports) a selecting policy allows: return
                    counter name eg-<h> drop      (empty where no policy selects it)
    set p4-<h>      peer addresses (pods by selector, ipBlocks less their excepts)

Names are digests of what they stand for (a chain's of its pod, a set's of its
content), so two compiles name the same thing alike and :func:`update_script` can
change the kernel's table by the difference alone — the sets, chains and map elements
that changed — in one transaction (and :func:`cleanup_script` delete what is no
longer used in a second one); :attr:`CompiledRuleset.text` replaces it whole (at
start, on a resync, after a failure).

- A **verdict map keyed by pod address** finds a packet's pod chain in one lookup, so
  the cost per packet does not grow with the number of pods; inside a chain, peers are
  set lookups, so it grows only with that pod's rules.
- **Every pod of this node has its chains and map elements**, empty (the packet
  returns) while no policy selects it: a policy that isolates a pod then rewrites that
  pod's chain only. Changing a verdict map's elements (or deleting a chain) makes nft
  read the whole table, sets and all, before the transaction — 20-50 ms at 1,000
  policies against 4-7 ms for chains, rules and new sets (measured with nft 1.0.6) —
  so the map changes only when pods come and go.
- Allowed traffic **returns** from a pod chain, so a packet between two isolated pods
  of this node meets the source's egress and the destination's ingress in turn; what
  no rule allows meets the chain's counted drop (``plainnet_policy_dropped_packets``).
- Replies of allowed connections pass the first rule (conntrack); a connection that was
  established before a policy denied it keeps flowing until it ends.
- Traffic from this node to its pods (kubelet probes) is not judged: it leaves through
  the output hook, which the table does not hook — as most implementations do.
- Pods' IPv6 neighbour discovery to the node is always let in (a pod denied all egress
  still resolves its gateway; nothing else passes).
- Sets of identical content are one set; their addresses are merged into disjoint
  ranges first (nftables refuses overlapping intervals). Peer pods are found through
  an index by namespace and label, so a selector looks at its candidates only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import defaultdict
from dataclasses import dataclass, field

from plainnet.ipam.types import IPAddress
from plainnet.policy.model import EGRESS, INGRESS, Cluster, Peer, Pod, Policy, Port, Rule
from plainnet.policy.selectors import LabelSelector

TABLE = "plainnet-policy"
FAMILY = "inet"
DIRECTIONS = ((INGRESS, "in", "ingress"), (EGRESS, "eg", "egress"))
MAPS = ("ingress4", "ingress6", "egress4", "egress6")
_SAFE = re.compile(r"[^A-Za-z0-9._/ -]")

BASE_CHAINS = """    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        ip saddr vmap @egress4
        ip6 saddr vmap @egress6
        ip daddr vmap @ingress4
        ip6 daddr vmap @ingress6
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ct state established,related accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
        ip saddr vmap @egress4
        ip6 saddr vmap @egress6
    }"""


@dataclass
class CompiledRuleset:
    #: set name -> its declaration ("type ...; flags interval; elements = { ... }")
    sets: dict[str, str] = field(default_factory=dict)
    #: pod chain name -> its rules (the counted drop last)
    chains: dict[str, list[str]] = field(default_factory=dict)
    #: pod chain name -> (pod key, direction): also the name of its drop counter
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: map name -> pod address -> pod chain
    maps: dict[str, dict[str, str]] = field(default_factory=lambda: {m: {} for m in MAPS})
    policies: int = 0
    selected_pods: int = 0
    rules: int = 0
    #: addresses two local pods claim: the first pod (by key) keeps them
    conflicts: list[str] = field(default_factory=list)
    #: the compile's peer work, for the next compile over the same pods and namespaces
    peers: object = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        """The script that replaces the table whole."""
        lines = [
            f"table {FAMILY} {TABLE} {{}}",
            f"delete table {FAMILY} {TABLE}",
            f"table {FAMILY} {TABLE} {{",
        ]
        lines += [f"    counter {chain} {{}}" for chain in self.chains]
        lines += [f"    set {name} {{ {body} }}" for name, body in self.sets.items()]
        for name in MAPS:
            elements = ", ".join(f"{a} : jump {c}" for a, c in self.maps[name].items())
            body = f" elements = {{ {elements} }};" if elements else ""
            lines.append(f"    map {name} {{ type {_map_type(name)} : verdict;{body} }}")
        for chain, rules in self.chains.items():
            lines.append(f"    chain {chain} {{")
            lines += [f"        {rule}" for rule in rules]
            lines.append("    }")
        lines += [BASE_CHAINS, "}"]
        return "\n".join(lines) + "\n"


def _map_type(name: str) -> str:
    return "ipv4_addr" if name.endswith("4") else "ipv6_addr"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def update_script(old: CompiledRuleset, new: CompiledRuleset) -> str:
    """The transaction that turns the table ``old`` describes into ``new`` — the sets,
    chains, counters and map elements that differ ("" when none do) — except the
    deletions of what ``new`` no longer uses: those are :func:`cleanup_script`'s, a
    transaction of their own after this one (a deleted set or chain makes nft read the
    whole table first, ~20 ms at 1,000 policies, which a change need not wait for)."""
    at = f"{FAMILY} {TABLE}"
    lines = [f"add set {at} {n} {{ {b} }}" for n, b in new.sets.items() if n not in old.sets]
    lines += [f"add counter {at} {c}" for c in new.chains if c not in old.chains]
    for chain, rules in new.chains.items():
        if old.chains.get(chain) == rules:
            continue
        comment, body = rules[0], rules[1:]  # a chain's comment is part of the chain
        if chain not in old.chains:
            lines.append(f"add chain {at} {chain} {{ {comment} ; }}")
        else:
            lines.append(f"flush chain {at} {chain}")
        lines += [f"add rule {at} {chain} {rule}" for rule in body]
    for name in MAPS:
        before, after = old.maps[name], new.maps[name]
        gone = [a for a, c in before.items() if after.get(a) != c]
        added = [f"{a} : jump {c}" for a, c in after.items() if before.get(a) != c]
        if gone:  # before the additions: a new pod may have a gone pod's address
            lines.append(f"delete element {at} {name} {{ {', '.join(gone)} }}")
        if added:
            lines.append(f"add element {at} {name} {{ {', '.join(added)} }}")
    return "\n".join(lines) + "\n" if lines else ""


def cleanup_script(old: CompiledRuleset, new: CompiledRuleset) -> str:
    """After :func:`update_script`: delete the chains, counters and sets ``new`` no
    longer uses ("" when there are none)."""
    at = f"{FAMILY} {TABLE}"
    lines = []
    for chain in old.chains:
        if chain not in new.chains:
            lines += [f"delete chain {at} {chain}", f"delete counter {at} {chain}"]
    lines += [f"delete set {at} {n}" for n in old.sets if n not in new.sets]
    return "\n".join(lines) + "\n" if lines else ""


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges sorted and merged where they overlap or touch."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


class _Sets:
    """Named address sets, one per distinct content, named by a digest of it."""

    def __init__(self) -> None:
        self.declared: dict[str, str] = {}
        self._names: dict[tuple[int, tuple[tuple[int, int], ...]], str] = {}

    def name(self, version: int, ranges: list[tuple[int, int]]) -> str | None:
        merged = tuple(_merge(ranges))
        if not merged:
            return None
        key = (version, merged)
        if key not in self._names:
            make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            elements = ", ".join(
                str(make(a)) if a == b else f"{make(a)}-{make(b)}" for a, b in merged
            )
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
            body = f"type {kind}; flags interval; elements = {{ {elements} }};"
            name = f"p{version}-{_digest(body)}"
            self._names[key] = name
            self.declared[name] = body
        return self._names[key]


class _Index:
    """Pods by namespace and by label, so a selector is matched against its
    candidates only."""

    def __init__(self, pods: list[Pod]) -> None:
        self.by_namespace: dict[str, list[Pod]] = defaultdict(list)
        self.by_label: dict[tuple[str, str], set[Pod]] = defaultdict(set)
        for pod in pods:
            self.by_namespace[pod.namespace].append(pod)
            for item in pod.labels.items():
                self.by_label[item].add(pod)

    def select(self, namespaces: list[str], selector: LabelSelector | None) -> list[Pod]:
        requirements = selector.requirements if selector is not None else ()
        narrowing = next((r for r in requirements if r.operator == "In"), None)
        found = []
        wanted = set(namespaces)
        if narrowing is not None and selector is not None:
            candidates = set().union(
                *(self.by_label.get((narrowing.key, v), ()) for v in narrowing.values)
            )
            found = [p for p in candidates if p.namespace in wanted and selector.matches(p.labels)]
        else:
            for namespace in namespaces:
                found += [
                    p
                    for p in self.by_namespace.get(namespace, ())
                    if selector is None or selector.matches(p.labels)
                ]
        return sorted(found, key=lambda p: (p.namespace, p.name))


class _Compiler:
    def __init__(self, cluster: Cluster, node: str, peers: _Compiler | None = None) -> None:
        """``peers``: an earlier compile over the same pods and namespaces, whose peer
        work (the index, which pods a peer matches, the sets) is taken over — a change
        of policies alone then costs only the rules of the pods they select."""
        self.cluster = cluster
        self.node = node
        if peers is not None:
            self.sets, self.pods, self.index = peers.sets, peers.pods, peers.index
            self._peer_pods, self._peer_clauses = peers._peer_pods, peers._peer_clauses
            self._named, self._chains = peers._named, peers._chains
            return
        self.sets = _Sets()
        self.pods = [p for p in cluster.pods if not p.host_network and p.addresses]
        self.index = _Index(self.pods)
        self._peer_pods: dict[tuple[str, Peer], list[Pod]] = {}
        self._peer_clauses: dict[tuple[str, tuple[Peer, ...], str], list[str]] = {}
        self._named: dict[tuple, list[str]] = {}
        #: (pod, direction, its selecting policies) -> its chain's rules
        self._chains: dict[tuple, list[str]] = {}

    # --- peers --------------------------------------------------------------------------

    def peer_pods(self, namespace: str, peer: Peer) -> list[Pod]:
        """The pods a selector peer of a policy in ``namespace`` matches."""
        key = (namespace, peer)
        if key not in self._peer_pods:
            if peer.namespace_selector is None:
                namespaces = [namespace]
            else:
                namespaces = [
                    n
                    for n in self.index.by_namespace
                    if peer.namespace_selector.matches(self.cluster.namespace_labels(n))
                ]
            self._peer_pods[key] = self.index.select(namespaces, peer.pod_selector)
        return self._peer_pods[key]

    def peer_ranges(self, namespace: str, peers: tuple[Peer, ...]) -> dict[int, list]:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for peer in peers:
            if peer.broken:
                continue
            if peer.ip_block is not None:
                for network in peer.ip_block.networks():
                    ranges[network.version].append(
                        (int(network.network_address), int(network.broadcast_address))
                    )
                continue
            for pod in self.peer_pods(namespace, peer):
                for address in pod.addresses:
                    ranges[address.version].append((int(address), int(address)))
        return ranges

    def peer_clauses(self, namespace: str, peers: tuple[Peer, ...], direction: str) -> list[str]:
        """The address matches of a rule's peers (one per family that has addresses;
        ``[""]``: every peer) — worked out once per policy rule, however many of this
        node's pods the policy selects."""
        key = (namespace, peers, direction)
        if key not in self._peer_clauses:
            where = "saddr" if direction == INGRESS else "daddr"
            clauses = [""]
            if peers:
                ranges = self.peer_ranges(namespace, peers)
                clauses = []
                for version, prefix in ((4, "ip"), (6, "ip6")):
                    name = self.sets.name(version, ranges[version])
                    if name is not None:
                        clauses.append(f"{prefix} {where} @{name} ")
            self._peer_clauses[key] = clauses
        return self._peer_clauses[key]

    # --- rules --------------------------------------------------------------------------

    def rule_lines(self, policy: Policy, rule: Rule, pod: Pod, direction: str) -> list[str]:
        """The nft rules of one policy rule for ``pod``'s chain in ``direction``."""
        peer_clauses = self.peer_clauses(policy.namespace, rule.peers, direction)
        if not peer_clauses:
            return []  # the peers match no address: the rule allows nothing
        port_clauses, named = self.port_clauses(rule.ports, pod, direction)
        lines = [f"{p}{q}return" for p in peer_clauses for q in port_clauses]
        if named:
            lines += self.named_egress(policy, rule, named)
        return lines

    def port_clauses(
        self, ports: tuple[Port, ...], pod: Pod, direction: str
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """The port matches of a rule; and, for egress, the named ports (resolved per
        destination pod, so matched apart from the others)."""
        if not ports:
            return [""], []
        every: set[str] = set()
        ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
        named: list[tuple[str, str]] = []
        for spec in ports:
            if spec.broken:
                continue
            protocol = spec.protocol
            if spec.port is None:
                every.add(protocol)
            elif isinstance(spec.port, str):
                if direction == INGRESS:  # this pod is the destination
                    ranges[protocol] += [(n, n) for n in pod.named_ports(spec.port, protocol)]
                else:
                    named.append((protocol, spec.port))
            else:
                ranges[protocol].append((spec.port, spec.end_port or spec.port))
        clauses = [f"meta l4proto {p.lower()} " for p in sorted(every)]
        for protocol in sorted(set(ranges) - every):
            if ranges[protocol]:
                items = ", ".join(
                    str(a) if a == b else f"{a}-{b}" for a, b in _merge(ranges[protocol])
                )
                clauses.append(f"meta l4proto {protocol.lower()} th dport {{ {items} }} ")
        return clauses, named

    def named_egress(self, policy: Policy, rule: Rule, named: list[tuple[str, str]]) -> list[str]:
        """Egress to named ports: (destination address, protocol, port) of every pod
        the rule's peers reach that has a container port of that name."""
        key = (policy.namespace, rule.peers, tuple(named))
        if key in self._named:
            return self._named[key]
        members = [
            (peer, set(self.peer_pods(policy.namespace, peer)) if peer.ip_block is None else None)
            for peer in rule.peers
            if not peer.broken
        ]
        elements: dict[int, set[str]] = {4: set(), 6: set()}
        for pod in self.pods:
            for address in pod.addresses:
                if rule.peers and not any(
                    peer.ip_block.contains(address) if pods is None else pod in pods
                    for peer, pods in members
                    if peer.ip_block is not None or pods is not None
                ):
                    continue
                for protocol, name in named:
                    for number in pod.named_ports(name, protocol):
                        elements[address.version].add(f"{address} . {protocol.lower()} . {number}")
        lines = []
        for version, prefix in ((4, "ip"), (6, "ip6")):
            if elements[version]:
                items = ", ".join(sorted(elements[version]))
                lines.append(f"{prefix} daddr . meta l4proto . th dport {{ {items} }} return")
        self._named[key] = lines
        return lines

    # --- the table ----------------------------------------------------------------------

    def compile(self) -> CompiledRuleset:
        result = CompiledRuleset(policies=len(self.cluster.policies))
        local = sorted(
            (p for p in self.pods if p.node == self.node), key=lambda p: (p.namespace, p.name)
        )
        claimed: dict[IPAddress, str] = {}
        selected: set[str] = set()
        chains_now: dict[tuple, list[str]] = {}
        by_namespace: dict[str, list[Policy]] = defaultdict(list)  # a policy selects its own
        for policy in self.cluster.policies:
            by_namespace[policy.namespace].append(policy)
        for pod in local:
            addresses = []
            for address in pod.addresses:
                owner = claimed.setdefault(address, pod.key)
                if owner == pod.key:
                    addresses.append(address)
                else:
                    result.conflicts.append(f"{address} of {pod.key} is {owner}'s")
            for direction, prefix, map_name in DIRECTIONS:
                policies = [
                    p
                    for p in by_namespace.get(pod.namespace, ())
                    if direction in p.types and self.cluster.selected(p, pod)
                ]
                if not addresses:
                    continue
                chain = f"{prefix}-{_digest(pod.key)}"
                result.owners[chain] = (pod.key, direction)
                comment = _SAFE.sub("_", f"{pod.key} {direction}")[:120]
                if not policies:
                    result.chains[chain] = [f'comment "{comment}"']  # not isolated: returns
                else:
                    selected.add(pod.key)
                    key = (pod, direction, tuple(policies))
                    rules = self._chains.get(key)  # same pod, policies and peers: same rules
                    if rules is None:
                        rules = [
                            line
                            for policy in policies
                            for rule in policy.rules(direction)
                            for line in self.rule_lines(policy, rule, pod, direction)
                        ]
                        rules = list(dict.fromkeys(rules))  # a rule from two policies: once
                    chains_now[key] = rules
                    result.rules += len(rules)
                    result.chains[chain] = [
                        f'comment "{comment}"',
                        *rules,
                        f'counter name "{chain}" drop',
                    ]
                for address in addresses:
                    result.maps[f"{map_name}{address.version}"][str(address)] = chain
        self._chains = chains_now  # only what this compile used is carried over
        result.selected_pods = len(selected)
        used = {name for rules in result.chains.values() for r in rules for name in _SET.findall(r)}
        result.sets = {n: b for n, b in self.sets.declared.items() if n in used}
        result.peers = self
        return result


_SET = re.compile(r"@(p[46]-[0-9a-f]+)")


def compile_ruleset(
    cluster: Cluster, node: str, reuse: CompiledRuleset | None = None
) -> CompiledRuleset:
    """The table for the pods of ``node``. ``reuse``: an earlier result over the same
    pods and namespaces (only policies changed since), whose peer work is taken over."""
    earlier = reuse.peers if reuse is not None else None
    return _Compiler(cluster, node, earlier if isinstance(earlier, _Compiler) else None).compile()
