"""The reference answer: is a new connection from A to B on a port allowed?

Written from the NetworkPolicy API documentation alone, one sentence at a time, and
on purpose sharing nothing with the compiler but the parsed objects — it is the
oracle the compiled ruleset is tested against:

- "A pod is isolated for ingress if any NetworkPolicy selects it and has Ingress in
  its policyTypes" (likewise egress). A pod that is not isolated in a direction allows
  everything in it.
- For a connection from A to B to be allowed, A's egress must allow it (if A is an
  isolated pod) **and** B's ingress must allow it (if B is an isolated pod).
- "Allowed traffic is the union of what the rules of all policies selecting the pod
  allow"; a rule allows traffic that matches one of its peers (or any peer, when it
  lists none) **and** one of its ports (or any port, when it lists none).
- A named port is looked up in the destination pod's container ports; a destination
  that is not a pod has no named ports.
- An ipBlock matches addresses, pods' included (the API leaves pod addresses in an
  ipBlock to the implementation; plainnet treats an address as an address).
"""

from __future__ import annotations

from dataclasses import dataclass

from plainnet.ipam.types import IPAddress
from plainnet.policy.model import EGRESS, INGRESS, Cluster, Peer, Pod, Port, Rule


@dataclass(frozen=True)
class Endpoint:
    """One side of a connection: a pod, or an address that is none of the pods'."""

    address: IPAddress
    pod: Pod | None = None


def endpoint(cluster: Cluster, address: IPAddress) -> Endpoint:
    return Endpoint(address, cluster.by_address.get(address))


def allowed(
    cluster: Cluster, source: Endpoint, destination: Endpoint, protocol: str, port: int
) -> bool:
    """Would a new ``protocol`` connection from ``source`` to ``destination``:``port``
    be let through by the policies?"""
    return _direction_allows(
        cluster, source.pod, EGRESS, destination, destination, protocol, port
    ) and _direction_allows(cluster, destination.pod, INGRESS, source, destination, protocol, port)


def _direction_allows(
    cluster: Cluster,
    pod: Pod | None,
    direction: str,
    peer: Endpoint,
    destination: Endpoint,
    protocol: str,
    port: int,
) -> bool:
    if pod is None or pod.host_network:
        return True  # not a pod the policies can select
    selecting = [p for p in cluster.policies if direction in p.types and cluster.selected(p, pod)]
    if not selecting:
        return True  # not isolated in this direction
    return any(
        _rule_allows(cluster, policy.namespace, rule, peer, destination, protocol, port)
        for policy in selecting
        for rule in policy.rules(direction)
    )


def _rule_allows(
    cluster: Cluster,
    namespace: str,
    rule: Rule,
    peer: Endpoint,
    destination: Endpoint,
    protocol: str,
    port: int,
) -> bool:
    peer_ok = not rule.peers or any(_peer_matches(cluster, namespace, p, peer) for p in rule.peers)
    port_ok = not rule.ports or any(
        _port_matches(p, destination, protocol, port) for p in rule.ports
    )
    return peer_ok and port_ok


def _peer_matches(cluster: Cluster, namespace: str, peer: Peer, other: Endpoint) -> bool:
    if peer.broken:
        return False
    if peer.ip_block is not None:
        return peer.ip_block.contains(other.address)
    pod = other.pod
    if pod is None or pod.host_network:
        return False
    if peer.namespace_selector is None:
        in_namespace = pod.namespace == namespace
    else:
        in_namespace = peer.namespace_selector.matches(cluster.namespace_labels(pod.namespace))
    pod_ok = peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
    return in_namespace and pod_ok


def _port_matches(spec: Port, destination: Endpoint, protocol: str, port: int) -> bool:
    if spec.broken or spec.protocol != protocol:
        return False
    if spec.port is None:
        return True
    if isinstance(spec.port, str):
        return destination.pod is not None and port in destination.pod.named_ports(
            spec.port, protocol
        )
    if spec.end_port is not None:
        return spec.port <= port <= spec.end_port
    return port == spec.port
