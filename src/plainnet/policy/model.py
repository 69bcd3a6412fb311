"""NetworkPolicies, Pods and Namespaces as plain values, parsed from API objects.

Everything here comes from the API server, where anyone with write access to a
namespace may put it: it is parsed, not trusted. The rule for a broken piece is that
it **allows nothing and never widens**: a peer whose ipBlock is not a CIDR matches no
address, a port that is neither a number nor a name matches no port — while the policy
still selects its pods, so they stay isolated (fail-closed). Only a policy whose own
``podSelector`` cannot be understood is dropped whole (it is unknowable which pods it
isolates); each problem is one :class:`Problem`, for one log line.

Semantics follow ``networking.k8s.io/v1``:

- ``policyTypes`` absent: ``Ingress``, plus ``Egress`` when the policy has egress rules;
- a rule's ``from``/``to`` absent or empty: every peer; ``ports`` absent or empty: every
  port;
- a peer with ``podSelector`` alone: those pods of the policy's namespace; with
  ``namespaceSelector`` alone: every pod of those namespaces; with both: those pods of
  those namespaces; ``ipBlock``: addresses in ``cidr`` and in no ``except``;
- a port's ``protocol`` defaults to TCP; ``port`` absent: every port of the protocol; a
  named port is the destination pod's container port of that name and protocol;
  ``endPort``: the range ``port``..``endPort``.

Pods on the host network are neither selected nor matched by selectors (their address
is their node's); pods without an address yet are left out until they have one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from plainnet.ipam.types import IPAddress, IPNetwork
from plainnet.policy.selectors import EVERYTHING, LabelSelector, SelectorError, parse_selector
from plainnet.text import printable

PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True)
class IpBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, address: IPAddress) -> bool:
        return (
            address.version == self.cidr.version
            and address in self.cidr
            and not any(address in e for e in self.excepts)
        )

    def networks(self) -> list[IPNetwork]:
        """``cidr`` less every ``except``, as disjoint networks."""
        remaining = [self.cidr]
        for excluded in self.excepts:
            if excluded.version != self.cidr.version:
                continue
            next_remaining: list[IPNetwork] = []
            for network in remaining:
                if excluded.supernet_of(network):  # type: ignore[arg-type]
                    continue
                if network.supernet_of(excluded):  # type: ignore[arg-type]
                    next_remaining.extend(network.address_exclude(excluded))  # type: ignore[arg-type]
                else:
                    next_remaining.append(network)
            remaining = next_remaining
        return remaining


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` entry. ``broken``: it could not be parsed and matches nothing."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IpBlock | None = None
    broken: bool = False


@dataclass(frozen=True)
class Port:
    protocol: str = "TCP"
    #: a number, a name, or None (every port of the protocol)
    port: int | str | None = None
    end_port: int | None = None
    #: could not be parsed: matches no port
    broken: bool = False


@dataclass(frozen=True)
class Rule:
    #: empty: every peer
    peers: tuple[Peer, ...] = ()
    #: empty: every port
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)
    addresses: tuple[IPAddress, ...] = ()
    node: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_ports(self, name: str, protocol: str) -> list[int]:
        return [p.port for p in self.ports if p.name == name and p.protocol == protocol]


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class Problem:
    """Something in an object that was refused, for one log line."""

    subject: str
    reason: str

    def __str__(self) -> str:
        return f"{printable(self.subject)}: {printable(self.reason)}"


@dataclass
class Cluster:
    """Everything the policies are evaluated over: every policy, every pod (of every
    node: peers are cluster-wide), every namespace."""

    policies: list[Policy] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    namespaces: dict[str, Namespace] = field(default_factory=dict)

    @cached_property
    def by_address(self) -> dict[IPAddress, Pod]:
        """Pods by address: the evaluator's lookup, built on first use (the compiler,
        run on every change, does not need it)."""
        return {a: pod for pod in self.pods if not pod.host_network for a in pod.addresses}

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        namespace = self.namespaces.get(name)
        return namespace.labels if namespace else {}

    def selected(self, policy: Policy, pod: Pod) -> bool:
        return (
            not pod.host_network
            and pod.namespace == policy.namespace
            and policy.pod_selector.matches(pod.labels)
        )


# --- parsing API objects -------------------------------------------------------------------


def _metadata(document: Any) -> tuple[str, str, dict[str, str]]:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("no metadata")
    name, namespace = metadata.get("name"), metadata.get("namespace") or ""
    labels = metadata.get("labels") or {}
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise ValueError("name or namespace is not a string")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError("labels are not strings")
    return namespace, name, labels


def parse_namespace(document: Any) -> Namespace:
    _, name, labels = _metadata(document)
    return Namespace(name, labels)


def parse_pod(document: Any) -> Pod:
    """A Pod object; ValueError if it cannot be one (it is then left out)."""
    namespace, name, labels = _metadata(document)
    spec = document.get("spec") or {}
    status = document.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(status, dict):
        raise ValueError("spec or status is not an object")
    addresses: list[IPAddress] = []
    entries = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    for entry in entries if isinstance(entries, list) else []:
        try:
            address = ipaddress.ip_address(entry.get("ip") if isinstance(entry, dict) else "")
        except ValueError:
            continue  # an address that is none: not this pod's
        if address not in addresses:
            addresses.append(address)
    ports: list[ContainerPort] = []
    for container in spec.get("containers") or []:
        for port in (container.get("ports") or []) if isinstance(container, dict) else []:
            if not isinstance(port, dict):
                continue
            number, port_name = port.get("containerPort"), port.get("name")
            protocol = port.get("protocol") or "TCP"
            if isinstance(number, int) and 0 < number < 65536 and isinstance(port_name, str):
                ports.append(ContainerPort(port_name, number, protocol))
    node = spec.get("nodeName")
    return Pod(
        namespace,
        name,
        labels,
        tuple(addresses),
        node if isinstance(node, str) else None,
        tuple(ports),
        bool(spec.get("hostNetwork")),
    )


def _parse_port(document: Any) -> Port:
    if not isinstance(document, dict):
        return Port(broken=True)
    protocol = document.get("protocol") or "TCP"
    port, end_port = document.get("port"), document.get("endPort")
    if protocol not in PROTOCOLS:
        return Port(str(protocol)[:16], broken=True)
    if isinstance(port, str) and port.isdigit():
        port = int(port)  # an IntOrString that carries a number
    if port is not None and not (
        (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536)
        or (isinstance(port, str) and 0 < len(port) <= 15)
    ):
        return Port(protocol, broken=True)
    if end_port is not None and not (
        isinstance(port, int)
        and isinstance(end_port, int)
        and not isinstance(end_port, bool)
        and port <= end_port < 65536
    ):
        return Port(protocol, broken=True)
    return Port(protocol, port, end_port)


def _parse_ip_block(document: Any) -> IpBlock:
    if not isinstance(document, dict) or not isinstance(document.get("cidr"), str):
        raise ValueError("ipBlock has no cidr")
    cidr = ipaddress.ip_network(document["cidr"], strict=False)
    excepts = []
    for item in document.get("except") or []:
        if not isinstance(item, str):
            raise ValueError("an ipBlock except is not a string")
        excepts.append(ipaddress.ip_network(item, strict=False))
    return IpBlock(cidr, tuple(excepts))


def _parse_peer(document: Any) -> Peer:
    if not isinstance(document, dict):
        raise ValueError("a peer is not an object")
    if "ipBlock" in document and document["ipBlock"] is not None:
        return Peer(ip_block=_parse_ip_block(document["ipBlock"]))
    pods, namespaces = document.get("podSelector"), document.get("namespaceSelector")
    if pods is None and namespaces is None:
        raise ValueError("a peer with no selector and no ipBlock")
    return Peer(
        parse_selector(pods) if pods is not None else None,
        parse_selector(namespaces) if namespaces is not None else None,
    )


def _parse_rules(
    documents: Any, peer_field: str, subject: str, problems: list[Problem]
) -> tuple[Rule, ...]:
    rules = []
    for index, document in enumerate(documents if isinstance(documents, list) else []):
        if not isinstance(document, dict):
            problems.append(Problem(subject, f"rule {index} is not an object: it allows nothing"))
            continue
        peers = []
        for peer in document.get(peer_field) or []:
            try:
                peers.append(_parse_peer(peer))
            except (ValueError, SelectorError) as exc:
                problems.append(Problem(subject, f"a peer of rule {index} allows nothing: {exc}"))
                peers.append(Peer(broken=True))
        ports = tuple(_parse_port(p) for p in document.get("ports") or [])
        for port in ports:
            if port.broken:
                problems.append(Problem(subject, f"a port of rule {index} matches nothing"))
        rules.append(Rule(tuple(peers), ports))
    return tuple(rules)


def parse_policy(document: Any, problems: list[Problem]) -> Policy | None:
    """A NetworkPolicy object; None (and a problem) when which pods it selects cannot
    be known."""
    try:
        namespace, name, _ = _metadata(document)
    except ValueError as exc:
        problems.append(Problem("a NetworkPolicy", str(exc)))
        return None
    subject = f"NetworkPolicy {namespace}/{name}"
    spec = document.get("spec")
    if not isinstance(spec, dict):
        problems.append(Problem(subject, "no spec"))
        return None
    try:
        selector = parse_selector(spec.get("podSelector") or {})
    except SelectorError as exc:
        problems.append(Problem(subject, f"podSelector: {exc}; the policy is ignored"))
        return None
    ingress = _parse_rules(spec.get("ingress"), "from", subject, problems)
    egress = _parse_rules(spec.get("egress"), "to", subject, problems)
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        types = frozenset(t for t in declared if t in (INGRESS, EGRESS))
    else:
        types = frozenset({INGRESS, EGRESS} if spec.get("egress") else {INGRESS})
    return Policy(namespace, name, selector, types, ingress, egress)


def parse_cluster(
    policies: Iterable[Any], pods: Iterable[Any], namespaces: Iterable[Any]
) -> tuple[Cluster, list[Problem]]:
    """API objects (as dicts) -> a :class:`Cluster`, and what was refused."""
    problems: list[Problem] = []
    parsed_policies = [p for d in policies if (p := parse_policy(d, problems)) is not None]
    parsed_pods = []
    for document in pods:
        try:
            parsed_pods.append(parse_pod(document))
        except ValueError as exc:
            problems.append(Problem("a Pod", str(exc)))
    parsed_namespaces = {}
    for document in namespaces:
        try:
            namespace = parse_namespace(document)
        except ValueError as exc:
            problems.append(Problem("a Namespace", str(exc)))
            continue
        parsed_namespaces[namespace.name] = namespace
    return Cluster(parsed_policies, parsed_pods, parsed_namespaces), problems


__all__ = [
    "EGRESS",
    "EVERYTHING",
    "INGRESS",
    "Cluster",
    "ContainerPort",
    "IpBlock",
    "Namespace",
    "Peer",
    "Policy",
    "Pod",
    "Port",
    "Problem",
    "Rule",
    "parse_cluster",
    "parse_pod",
    "parse_policy",
]
