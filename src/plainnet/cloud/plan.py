"""From Nodes and what the cloud holds to the route changes that make them agree. Pure.

Desired: in every route table of the cluster, one route per node pod subnet, to that
node's instance (or its primary network interface). Present: the tables' routes, of
which plainnet's own are those it created (origin ``CreateRoute``) with a destination
inside a cluster CIDR — in a table tagged for this cluster (the provider only returns
those). AWS routes carry no tags, so that rule is the ownership mark, as it is for the
upstream route controller: never share a tagged table with another cluster whose
CIDR overlaps this one's. A route to anywhere else (the default route, a peering, a
transit gateway, another cluster's range) is never touched.

Ordering when a table is full: routes already there keep their place; new ones go to
the oldest nodes first (then by name), so a burst of new nodes never pushes out a
working one, and the nodes left without a route are named (``RouteTableFull``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Literal

from plainnet.ipam.types import IPNetwork
from plainnet.text import printable

#: ``aws:///<availability zone>/<instance id>`` (also ``aws://<zone>/<id>``, as some
#: installers write it).
_AWS_PROVIDER_ID = re.compile(r"aws:///?([a-z0-9-]{1,64})/(i-[0-9a-f]{8,17})")
ROUTE_LIMIT = 50


@dataclass(frozen=True)
class NodeFacts:
    """What of a Node decides its routes."""

    name: str
    uid: str
    provider_id: str | None
    #: as the Node says them: hostile until parsed
    pod_cidrs: tuple[str, ...]
    #: creation time (seconds since the epoch)
    created: float | None = None


@dataclass(frozen=True)
class Instance:
    id: str
    network_interface: str | None
    source_dest_check: bool
    state: str = "running"


@dataclass(frozen=True)
class Route:
    destination: IPNetwork
    instance: str | None = None
    network_interface: str | None = None
    #: "active", or "blackhole" when its target is gone
    state: str = "active"
    #: "CreateRoute" (made by an API call), "CreateRouteTable" (local), ...
    origin: str = "CreateRoute"


@dataclass(frozen=True)
class RouteTable:
    id: str
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class CloudState:
    tables: tuple[RouteTable, ...]
    #: the instances of the VPC, by id
    instances: Mapping[str, Instance]


Operation = Literal["create", "replace", "delete"]


@dataclass(frozen=True)
class RouteChange:
    operation: Operation
    table: str
    destination: IPNetwork
    #: instance or network interface id; None for a delete
    target: str | None
    node: str | None


@dataclass(frozen=True)
class NodeProblem:
    node: str
    uid: str
    reason: str
    message: str


@dataclass
class RoutePlan:
    changes: list[RouteChange] = field(default_factory=list)
    problems: list[NodeProblem] = field(default_factory=list)
    #: nodes whose every pod subnet is (or, once the changes are made, will be)
    #: routed to them in every table
    routed: set[str] = field(default_factory=set)
    #: instances of the cluster's nodes whose source/destination check is still on
    source_dest_check: list[str] = field(default_factory=list)
    desired: int = 0
    present: int = 0


def parse_provider_id(provider_id: str | None) -> tuple[str | None, str | None]:
    """(instance id, None) or (None, why not: an Event reason)."""
    if not provider_id:
        return None, "NoProviderID"
    if not provider_id.startswith("aws:"):
        return None, "ForeignProviderID"
    match = _AWS_PROVIDER_ID.fullmatch(provider_id)
    if match is None:
        return None, "InvalidProviderID"
    return match.group(2), None


def is_own(route: Route, cluster_cidrs: Sequence[IPNetwork]) -> bool:
    return route.origin == "CreateRoute" and any(
        route.destination.version == c.version and route.destination.subnet_of(c)  # type: ignore[arg-type]
        for c in cluster_cidrs
    )


_MESSAGES = {
    "NoProviderID": "has no spec.providerID: the cloud controller has not initialised it",
    "ForeignProviderID": "providerID {pid!r} is not an AWS instance",
    "InvalidProviderID": "providerID {pid!r} is not aws:///<zone>/<instance id>",
    "InstanceNotFound": "instance {instance} is not a running instance of this VPC",
    "PodCIDROutsideCluster": "podCIDR {cidr} is outside the cluster CIDRs: not routed",
    "InvalidPodCIDR": "podCIDR {cidr!r} is not a network: not routed",
    "DuplicatePodCIDR": "podCIDR {cidr} is also node {other}'s (the older): not routed",
}


def _problem(node: NodeFacts, reason: str, **details: object) -> NodeProblem:
    pid = (node.provider_id or "")[:200]
    return NodeProblem(node.name, node.uid, reason, _MESSAGES[reason].format(pid=pid, **details))


def desired_routes(
    nodes: Iterable[NodeFacts],
    instances: Mapping[str, Instance],
    cluster_cidrs: Sequence[IPNetwork],
    target: Literal["instance", "network-interface"] = "instance",
) -> tuple[dict[IPNetwork, tuple[NodeFacts, str]], list[NodeProblem], dict[str, str]]:
    """(destination -> (node, target id), problems, node -> instance id) in the order
    routes are given room: oldest node first, then by name."""
    ordered = sorted(nodes, key=lambda n: (n.created is None, n.created or 0, n.name))
    desired: dict[IPNetwork, tuple[NodeFacts, str]] = {}
    problems: list[NodeProblem] = []
    instance_of: dict[str, str] = {}
    for node in ordered:
        if not node.pod_cidrs:
            continue
        instance_id, reason = parse_provider_id(node.provider_id)
        if instance_id is None:
            problems.append(_problem(node, reason or "InvalidProviderID"))
            continue
        instance = instances.get(instance_id)
        if instance is None or instance.state not in ("running", "pending", "stopped"):
            problems.append(_problem(node, "InstanceNotFound", instance=instance_id))
            continue
        target_id = instance.id if target == "instance" else instance.network_interface
        if target_id is None:
            problems.append(_problem(node, "InstanceNotFound", instance=instance_id))
            continue
        instance_of[node.name] = instance.id
        for text in node.pod_cidrs:
            try:
                cidr = ip_network(text, strict=True)
            except ValueError:
                problems.append(_problem(node, "InvalidPodCIDR", cidr=printable(text[:100])))
                continue
            if not any(cidr.version == c.version and cidr.subnet_of(c) for c in cluster_cidrs):  # type: ignore[arg-type]
                problems.append(_problem(node, "PodCIDROutsideCluster", cidr=cidr))
            elif cidr in desired:
                other = desired[cidr][0].name
                problems.append(_problem(node, "DuplicatePodCIDR", cidr=cidr, other=other))
            else:
                desired[cidr] = (node, target_id)
    return desired, problems, instance_of


def _target_of(route: Route, target: str) -> str | None:
    return route.instance if target == "instance" else route.network_interface


def plan_routes(
    nodes: Iterable[NodeFacts],
    cloud: CloudState,
    cluster_cidrs: Sequence[IPNetwork],
    limits: Mapping[str, int] | None = None,
    default_limit: int = ROUTE_LIMIT,
    target: Literal["instance", "network-interface"] = "instance",
) -> RoutePlan:
    """The changes that make every table hold exactly the desired routes (within each
    table's route limit), and what could not be served."""
    node_list = list(nodes)
    desired, problems, instance_of = desired_routes(
        node_list, cloud.instances, cluster_cidrs, target
    )
    plan = RoutePlan(problems=problems, desired=len(desired))
    unrouted: set[str] = set()
    full: dict[str, set[str]] = {}
    for table in cloud.tables:
        limit = (limits or {}).get(table.id, default_limit)
        own = {r.destination: r for r in table.routes if is_own(r, cluster_cidrs)}
        plan.present += len(own)
        count = len(table.routes)
        for destination, route in own.items():
            wanted = desired.get(destination)
            if wanted is None:
                plan.changes.append(RouteChange("delete", table.id, destination, None, None))
                count -= 1
            elif route.state != "active" or _target_of(route, target) != wanted[1]:
                node, target_id = wanted
                plan.changes.append(
                    RouteChange("replace", table.id, destination, target_id, node.name)
                )
        taken = {r.destination for r in table.routes}
        for destination, (node, target_id) in desired.items():
            if destination in own:
                continue
            if destination in taken:  # someone else's route (e.g. a propagated one) is there
                unrouted.add(node.name)
                continue
            if count >= limit:
                unrouted.add(node.name)
                full.setdefault(node.name, set()).add(table.id)
                continue
            plan.changes.append(RouteChange("create", table.id, destination, target_id, node.name))
            count += 1
    for name, tables in sorted(full.items()):
        node = next(n for n in node_list if n.name == name)
        plan.problems.append(
            NodeProblem(
                node.name,
                node.uid,
                "RouteTableFull",
                f"route table {', '.join(sorted(tables))} is full ({default_limit} routes "
                f"unless raised with --route-limit): no route to this node's pod subnet",
            )
        )
    served = {node.name for node, _ in desired.values()} - unrouted
    refused = {p.node for p in problems}
    plan.routed = {n for n in served if n not in refused} if cloud.tables else set()
    plan.source_dest_check = sorted(
        {i for i in instance_of.values() if cloud.instances[i].source_dest_check}
    )
    return plan
