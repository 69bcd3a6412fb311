"""The facts of a live cluster, for ``plainnet advise --kubeconfig``: the Node objects
(addresses, podCIDRs, providerID, zone) and what this machine sees — which nodes are
on-link — read from the kernel the way the agent reads it (its own devices and pod
bridges are not node networks). Run on a node, that is exactly the agent's view; run
elsewhere, the segments stay unknown and the advice says so.

Every value from the API server is hostile: an address that does not parse is left out
(and named), a providerID only names a cloud by its scheme.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from plainnet.advise.facts import CLOUDS, Facts, NodeFacts
from plainnet.datastore.kube_nodes import internal_ips, pod_cidrs
from plainnet.ipam.types import IPNetwork
from plainnet.text import printable

ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")


class InspectError(Exception):
    """The cluster could not be read; the message says what to check."""


def node_facts(node: Any, unknowns: list[str]) -> NodeFacts | None:
    """One Node object (lightkube's model) as facts, its addresses and podCIDRs read as
    the datastore reads them (:mod:`plainnet.datastore.kube_nodes`); None if it has no
    usable name."""
    name = node.metadata.name if node.metadata else None
    if not isinstance(name, str) or not name:
        unknowns.append("a Node without a name was left out")
        return None
    shown = printable(name, 63)
    addresses = []
    for text in internal_ips(node):
        try:
            addresses.append(ip_address(str(text)))
        except ValueError:
            unknowns.append(f"node {shown}: InternalIP {printable(str(text), 64)} is no address")
    cidrs: list[IPNetwork] = []
    for text in pod_cidrs(node):
        try:
            cidrs.append(ip_network(str(text)))
        except ValueError:
            unknowns.append(f"node {shown}: podCIDR {printable(str(text), 64)}")
    provider = node.spec.providerID if node.spec else None
    cloud = None
    if isinstance(provider, str) and "://" in provider:
        scheme = provider.split("://", 1)[0]
        cloud = scheme if scheme in CLOUDS else None
    labels = node.metadata.labels or {}
    zone = next((labels[k] for k in ZONE_LABELS if isinstance(labels.get(k), str)), None)
    return NodeFacts(name, tuple(addresses), pod_cidrs=tuple(cidrs), cloud=cloud, zone=zone)


def parse_nodes(nodes: list[Any]) -> tuple[list[NodeFacts], list[str]]:
    """Every usable Node as facts, and what was left out of them, in words."""
    unknowns: list[str] = []
    return [f for n in nodes if (f := node_facts(n, unknowns)) is not None], unknowns


def with_local_view(
    nodes: list[NodeFacts], local: list[tuple[IPNetwork, Any]]
) -> tuple[list[NodeFacts], list[str]]:
    """Give each node the networks this machine is on that hold its address — if this
    machine is itself one of the nodes (else nothing is known of the segments)."""
    mine = {address for _, address in local}
    if not any(a in mine for node in nodes for a in node.addresses):
        return nodes, ["this machine is not a node: segments unknown (run advise on a node)"]
    found = []
    for node in nodes:
        networks = tuple(
            network for network, _ in local if any(a in network for a in node.addresses)
        )
        # an off-link node: on another segment, which one (shared with whom) unknown
        found.append(replace(node, networks=networks))
    return found, []


def facts_from_nodes(
    nodes: list[NodeFacts],
    unknowns: list[str],
    local: list[tuple[IPNetwork, Any]],
    source: str,
    **settings: Any,
) -> Facts:
    """Pure: the nodes (:func:`parse_nodes`) and this machine's networks as facts."""
    if not nodes:
        raise InspectError(f"{source}: the cluster has no Node objects yet")
    nodes, more = with_local_view(nodes, local)
    clouds = {n.cloud for n in nodes}
    cloud = next(iter(clouds)) if len(clouds) == 1 else None
    zones = sorted({n.zone for n in nodes if n.zone})
    facts_said = [*unknowns[:10], *more]
    if zones:
        facts_said.append(f"zones: {', '.join(printable(z, 40) for z in zones[:5])}")
    return Facts(
        nodes=tuple(nodes),
        cloud=None if settings.get("cloud") == "none" else settings.get("cloud") or cloud,
        route_table_limit=settings.get("route_table_limit"),
        routers=settings.get("routers") or "unknown",
        security=settings.get("security") or "normal",
        cluster_cidr=settings.get("cluster_cidr"),
        service_cidr=settings.get("service_cidr"),
        source=source,
        unknowns=tuple(facts_said),
    )


def read_cluster(kubeconfig: Path, **settings: Any) -> Facts:
    """The adapter: Node objects through the kubeconfig, this machine's networks from
    the kernel (the agent's own reading, without its devices and pod bridges)."""
    from lightkube import Client, KubeConfig
    from lightkube.core.exceptions import ApiError, ConfigError
    from lightkube.resources.core_v1 import Node

    from plainnet.agent.backends import all_device_names
    from plainnet.agent.kernel import KernelRoutes
    from plainnet.agent.local_networks import node_networks

    try:
        config = KubeConfig.from_file(str(kubeconfig))
        client = Client(config, timeout=10)
        nodes, unknowns = parse_nodes(list(client.list(Node)))
        server = config.get().cluster.server
    except (OSError, ApiError, ConfigError, ValueError) as exc:
        raise InspectError(f"cannot read the cluster's Nodes with {kubeconfig}: {exc}") from None
    except Exception as exc:  # httpx errors: the server unreachable
        raise InspectError(f"cannot reach the API server of {kubeconfig}: {exc}") from None
    kernel = KernelRoutes(0)
    try:
        found = kernel.local_networks(all_device_names())
    finally:
        kernel.close()
    pod_subnets = [c for node in nodes for c in node.pod_cidrs]
    local = [(n.network, n.address) for n in node_networks(found, [], pod_subnets)]
    return facts_from_nodes(nodes, unknowns, local, f"cluster {server}", **settings)
