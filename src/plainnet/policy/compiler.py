"""(policies, pods, namespaces, this node) -> the whole ruleset of ``inet plainnet-policy``.
Pure: the same objects always give the same text, so a restart, a missed event or a
hand-edited table converges by applying it again.

The table, for this node's pods only (a packet is judged where it enters or leaves its
pod: the source pod's node checks egress, the destination pod's node ingress)::

    chain forward   hook forward: ct established,related accept
                                  ip saddr vmap @egress4      (and ip6 / @egress6)
                                  ip daddr vmap @ingress4     (and ip6 / @ingress6)
    chain input     hook input:   the same egress maps (a pod's traffic to its node)
    map egress4     pod address -> jump eg-<n>     one element per isolated pod
    chain eg-<n>    one rule per (peers, ports) a selecting policy allows: return
                    counter name eg-<n> drop
    set p4-<n>      peer addresses (pods by selector, ipBlocks less their excepts)

- A **verdict map keyed by pod address** finds a packet's pod chain in one lookup, so
  the cost per packet does not grow with the number of pods; inside a chain, peers are
  set lookups, so it grows only with that pod's rules.
- Allowed traffic **returns** from a pod chain, so a packet between two isolated pods
  of this node meets the source's egress and the destination's ingress in turn; what
  no rule allows meets the chain's counted drop (``plainnet_policy_dropped_packets``).
- Replies of allowed connections pass the first rule (conntrack); a connection that was
  established before a policy denied it keeps flowing until it ends.
- Traffic from this node to its pods (kubelet probes) is not judged: it leaves through
  the output hook, which the table does not hook — as most implementations do.
- Pods' IPv6 neighbour discovery to the node is always let in (a pod denied all egress
  still resolves its gateway; nothing else passes).
- Sets of identical content are one set; interval sets are collapsed first (nftables
  refuses overlapping intervals).
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from plainnet.ipam.types import IPAddress, IPNetwork
from plainnet.policy.model import EGRESS, INGRESS, Cluster, Peer, Pod, Policy, Port, Rule

TABLE = "plainnet-policy"
FAMILY = "inet"
DIRECTIONS = ((INGRESS, "in", "ingress"), (EGRESS, "eg", "egress"))
_SAFE = re.compile(r"[^A-Za-z0-9._/-]")


@dataclass
class CompiledRuleset:
    text: str
    #: chain name -> (pod key, direction), for the per-pod drop counters
    chains: dict[str, tuple[str, str]] = field(default_factory=dict)
    policies: int = 0
    selected_pods: int = 0
    rules: int = 0
    #: addresses two local pods claim: the first pod (by key) keeps them
    conflicts: list[str] = field(default_factory=list)


class _Sets:
    """Named address sets, one per distinct content."""

    def __init__(self) -> None:
        self.names: dict[tuple[int, tuple[IPNetwork, ...]], str] = {}

    def name(self, version: int, networks: Iterable[IPNetwork]) -> str | None:
        collapsed = tuple(ipaddress.collapse_addresses(networks))  # type: ignore[type-var]
        if not collapsed:
            return None
        key = (version, collapsed)
        if key not in self.names:
            self.names[key] = f"p{version}-{len(self.names)}"
        return self.names[key]

    def declarations(self) -> list[str]:
        lines = []
        for (version, networks), name in self.names.items():
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
            elements = ", ".join(_element(n) for n in networks)
            lines.append(
                f"    set {name} {{ type {kind}; flags interval; elements = {{ {elements} }} }}"
            )
        return lines


def _element(network: IPNetwork) -> str:
    return (
        str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    )


def _host(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(address)


class _Compiler:
    def __init__(self, cluster: Cluster, node: str) -> None:
        self.cluster = cluster
        self.node = node
        self.sets = _Sets()
        self.pods = [p for p in cluster.pods if not p.host_network and p.addresses]
        self._peer_pods: dict[tuple[str, Peer], list[Pod]] = {}
        self._peer_clauses: dict[tuple[str, tuple[Peer, ...], str], list[str]] = {}

    # --- peers --------------------------------------------------------------------------

    def peer_pods(self, namespace: str, peer: Peer) -> list[Pod]:
        """The pods a selector peer of a policy in ``namespace`` matches."""
        key = (namespace, peer)
        if key not in self._peer_pods:
            found = []
            for pod in self.pods:
                if peer.namespace_selector is None:
                    if pod.namespace != namespace:
                        continue
                elif not peer.namespace_selector.matches(
                    self.cluster.namespace_labels(pod.namespace)
                ):
                    continue
                if peer.pod_selector is None or peer.pod_selector.matches(pod.labels):
                    found.append(pod)
            self._peer_pods[key] = found
        return self._peer_pods[key]

    def peer_networks(self, namespace: str, peers: tuple[Peer, ...]) -> dict[int, list[IPNetwork]]:
        networks: dict[int, list[IPNetwork]] = {4: [], 6: []}
        for peer in peers:
            if peer.broken:
                continue
            if peer.ip_block is not None:
                for network in peer.ip_block.networks():
                    networks[network.version].append(network)
                continue
            for pod in self.peer_pods(namespace, peer):
                for address in pod.addresses:
                    networks[address.version].append(_host(address))
        return networks

    def peer_has(self, namespace: str, peer: Peer, pod: Pod, address: IPAddress) -> bool:
        if peer.broken:
            return False
        if peer.ip_block is not None:
            return peer.ip_block.contains(address)
        return pod in self.peer_pods(namespace, peer)

    # --- rules --------------------------------------------------------------------------

    def rule_lines(self, policy: Policy, rule: Rule, pod: Pod, direction: str) -> list[str]:
        """The nft rules of one policy rule for ``pod``'s chain in ``direction``."""
        peer_clauses = self.peer_clauses(policy.namespace, rule.peers, direction)
        if not peer_clauses:
            return []  # the peers match no address: the rule allows nothing
        lines = []
        port_clauses, named = self.port_clauses(rule.ports, pod, direction)
        lines += [f"{p}{q}return".replace("  ", " ") for p in peer_clauses for q in port_clauses]
        if named:
            lines += self.named_egress(policy, rule, named)
        return lines

    def peer_clauses(self, namespace: str, peers: tuple[Peer, ...], direction: str) -> list[str]:
        """The address matches of a rule's peers (one per family that has addresses;
        ``[""]``: every peer) — worked out once per policy rule, however many of this
        node's pods the policy selects."""
        key = (namespace, peers, direction)
        if key not in self._peer_clauses:
            where = "saddr" if direction == INGRESS else "daddr"
            clauses = [""]
            if peers:
                networks = self.peer_networks(namespace, peers)
                clauses = []
                for version, prefix in ((4, "ip"), (6, "ip6")):
                    name = self.sets.name(version, networks[version])
                    if name is not None:
                        clauses.append(f"{prefix} {where} @{name} ")
            self._peer_clauses[key] = clauses
        return self._peer_clauses[key]

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
        elements: dict[int, set[str]] = {4: set(), 6: set()}
        for pod in self.pods:
            for address in pod.addresses:
                if rule.peers and not any(
                    self.peer_has(policy.namespace, peer, pod, address) for peer in rule.peers
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
        return lines

    # --- the table ----------------------------------------------------------------------

    def compile(self) -> CompiledRuleset:
        result = CompiledRuleset("", policies=len(self.cluster.policies))
        local = sorted(
            (p for p in self.pods if p.node == self.node), key=lambda p: (p.namespace, p.name)
        )
        maps: dict[str, list[str]] = {f"{d}{v}": [] for d in ("ingress", "egress") for v in (4, 6)}
        claimed: dict[IPAddress, str] = {}
        chains: list[str] = []
        selected: set[str] = set()
        for pod in local:
            addresses = []
            for address in pod.addresses:
                owner = claimed.setdefault(address, pod.key)
                if owner == pod.key:
                    addresses.append(address)
                else:
                    result.conflicts.append(f"{address} of {pod.key} is {owner}'s")
            for direction, prefix, map_name in (
                (INGRESS, "in", "ingress"),
                (EGRESS, "eg", "egress"),
            ):
                policies = [
                    p
                    for p in self.cluster.policies
                    if direction in p.types and self.cluster.selected(p, pod)
                ]
                if not policies or not addresses:
                    continue
                selected.add(pod.key)
                chain = f"{prefix}-{len(result.chains)}"
                result.chains[chain] = (pod.key, direction)
                rules = [
                    line
                    for policy in policies
                    for rule in policy.rules(direction)
                    for line in self.rule_lines(policy, rule, pod, direction)
                ]
                rules = list(dict.fromkeys(rules))  # the same rule from two policies: once
                result.rules += len(rules)
                comment = _SAFE.sub("_", f"{pod.key} {direction}")[:120]
                chains.append(
                    "\n".join(
                        [
                            f"    chain {chain} {{",
                            f'        comment "{comment}"',
                            *(f"        {r}" for r in rules),
                            f'        counter name "{chain}" drop',
                            "    }",
                        ]
                    )
                )
                for address in addresses:
                    maps[f"{map_name}{address.version}"].append(f"{address} : jump {chain}")
        result.selected_pods = len(selected)
        lines = [
            f"table {FAMILY} {TABLE} {{}}",
            f"delete table {FAMILY} {TABLE}",
            f"table {FAMILY} {TABLE} {{",
        ]
        lines += [f"    counter {chain} {{}}" for chain in result.chains]
        lines += self.sets.declarations()
        for name, elements in maps.items():
            kind = "ipv4_addr" if name.endswith("4") else "ipv6_addr"
            body = f" elements = {{ {', '.join(elements)} }};" if elements else ""
            lines.append(f"    map {name} {{ type {kind} : verdict;{body} }}")
        lines += chains
        lines += [
            "    chain forward {",
            "        type filter hook forward priority filter; policy accept;",
            "        ct state established,related accept",
            "        ip saddr vmap @egress4",
            "        ip6 saddr vmap @egress6",
            "        ip daddr vmap @ingress4",
            "        ip6 daddr vmap @ingress6",
            "    }",
            "    chain input {",
            "        type filter hook input priority filter; policy accept;",
            "        ct state established,related accept",
            "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }"
            " accept",
            "        ip saddr vmap @egress4",
            "        ip6 saddr vmap @egress6",
            "    }",
            "}",
        ]
        result.text = "\n".join(lines) + "\n"
        return result


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Port ranges sorted and merged where they overlap or touch (nftables refuses
    overlapping elements in one set)."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def compile_ruleset(cluster: Cluster, node: str) -> CompiledRuleset:
    """The table for the pods of ``node``."""
    return _Compiler(cluster, node).compile()
