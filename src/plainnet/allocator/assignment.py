"""Which node gets which pod subnet. Pure: node facts in, patches and problems out.

The allocator's state is the API server's: on every (re)start it rebuilds its pools
from the podCIDRs Nodes already carry (``occupy``), so a subnet is never handed out
twice across restarts. A Node whose podCIDR is outside the cluster CIDR, has the wrong
size or duplicates another's is *reported*, never silently reassigned: changing a
running node's pod subnet would cut its pods off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_network

from plainnet.ipam.errors import IpamError, SubnetExhaustedError
from plainnet.ipam.node_subnets import NodeSubnetAllocator
from plainnet.ipam.types import IPNetwork


@dataclass(frozen=True)
class NodeFacts:
    name: str
    pod_cidrs: tuple[str, ...]
    created: float = 0.0


@dataclass(frozen=True)
class Assignment:
    node: str
    subnets: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class Problem:
    node: str
    reason: str  # an Event reason: CIDRNotAvailable, InvalidPodCIDR
    message: str


@dataclass
class AssignmentPlan:
    assignments: list[Assignment]
    problems: list[Problem]


def plan_assignments(nodes: Iterable[NodeFacts], allocator: NodeSubnetAllocator) -> AssignmentPlan:
    """Occupy what nodes hold (oldest first, so the earlier holder keeps a duplicate),
    then give every node without a subnet one per family, in creation order."""
    ordered = sorted(nodes, key=lambda n: (n.created, n.name))
    problems: list[Problem] = []
    waiting: list[NodeFacts] = []
    for node in ordered:
        if not node.pod_cidrs:
            waiting.append(node)
            continue
        try:
            allocator.occupy([ip_network(c, strict=True) for c in node.pod_cidrs])
        except (IpamError, ValueError) as exc:
            problems.append(
                Problem(
                    node.name,
                    "InvalidPodCIDR",
                    f"podCIDRs {', '.join(node.pod_cidrs)}: {exc}; left as is",
                )
            )
    assignments: list[Assignment] = []
    for node in waiting:
        try:
            assignments.append(Assignment(node.name, allocator.allocate()))
        except SubnetExhaustedError as exc:
            problems.append(Problem(node.name, "CIDRNotAvailable", str(exc)))
    return AssignmentPlan(assignments, problems)
