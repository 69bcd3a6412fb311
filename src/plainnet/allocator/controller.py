"""``plainnet allocator``: assign node pod subnets, as ``kube-controller-manager
--allocate-node-cidrs`` does, for clusters where that is off or cannot be changed.

Level-triggered like the agent: it keeps every Node it has seen (list, then watch),
and each pass plans from all of them (:mod:`plainnet.allocator.assignment`) and sends
the patches. Passes are batched — 1,000 Nodes created at once are a handful of passes
— and a pass waits for its own patches, recording each assignment locally before the
next pass, so no node is planned twice. The API server would refuse a second
assignment anyway: a podCIDR, once set, cannot change.

Pacing: at most :data:`IN_FLIGHT` PATCHes at a time over one HTTP connection pool, far
below the API server's own in-flight limit (400), and no artificial rate limit:
kube-controller-manager's node IPAM sends one PATCH at a time through a client limited
to 20 requests per second, which is why 1,000 new nodes take it 50 s.

Only the leader acts: a ``coordination.k8s.io`` Lease ``plainnet-allocator`` in
``kube-system``, taken and renewed with optimistic concurrency (resourceVersion), so two
replicas never both assign.

Failures only wait: a list, a watch, a PATCH or the leader lease that fails for any API
or network reason is retried with the shared :class:`~plainnet.retry.Backoff`; nothing
the API server (or its absence) does ends the process. A lease that cannot be renewed
in time is given up — the replica stops acting until it leads again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

from plainnet.allocator.assignment import NodeFacts, plan_assignments
from plainnet.controllers import API_ERRORS
from plainnet.controllers.events import NodeEvents
from plainnet.controllers.lease import LeaderLease
from plainnet.controllers.nodes import NodeCache, while_leading
from plainnet.datastore.kube_nodes import created_at, pod_cidrs
from plainnet.ipam.node_subnets import NodeSubnetAllocator
from plainnet.ipam.types import IPNetwork

log = logging.getLogger("plainnet.allocator")

IN_FLIGHT = 32
LEASE_NAME = "plainnet-allocator"


def _facts(node: Any) -> NodeFacts:
    return NodeFacts(node.metadata.name, pod_cidrs(node), created_at(node))


class Allocator:
    def __init__(
        self,
        client: AsyncClient,
        cluster_cidrs: list[IPNetwork],
        node_prefixes: dict[int, int],
        identity: str | None = None,
    ) -> None:
        self.client = client
        self.cluster_cidrs = cluster_cidrs
        self.node_prefixes = node_prefixes
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.cache: NodeCache[NodeFacts] = NodeCache(client, _facts)
        self.events = NodeEvents(client, "plainnet-allocator")
        self.assigned = 0

    @property
    def nodes(self) -> dict[str, NodeFacts]:
        return self.cache.nodes

    async def run(self) -> None:
        """Lead, assign while leading, and start over when the lease is lost."""
        lease = LeaderLease(self.client, LEASE_NAME, self.identity)
        await while_leading(lease, lambda: self.cache.follow(self.reconcile))

    async def reconcile(self) -> None:
        """One pass: plan from every known Node, patch the new assignments, report."""
        allocator = NodeSubnetAllocator(self.cluster_cidrs, self.node_prefixes)
        plan = plan_assignments(list(self.nodes.values()), allocator)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def assign(node: str, subnets: tuple[IPNetwork, ...]) -> None:
            cidrs = [str(s) for s in subnets]
            async with slots:
                for attempt in range(5):
                    try:
                        await self.client.patch(
                            Node, node, {"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}
                        )
                        break
                    except ApiError as exc:
                        if exc.status.code in (404, 422):  # gone, or assigned meanwhile
                            self.cache.changed.set()
                            return
                        await asyncio.sleep(0.1 * 2**attempt)
                    except API_ERRORS as exc:
                        log.warning("assigning a subnet to node %s failed: %s", node, exc)
                        await asyncio.sleep(0.1 * 2**attempt)
                else:
                    self.cache.changed.set()
                    return
            facts = self.nodes.get(node)
            if facts is not None:
                self.nodes[node] = NodeFacts(node, tuple(cidrs), facts.created)
            self.assigned += 1
            log.info("assigned %s to node %s", ", ".join(cidrs), node)

        await asyncio.gather(*(assign(a.node, a.subnets) for a in plan.assignments))
        for problem in plan.problems:
            await self.events.warn(problem.node, problem.reason, problem.message)
