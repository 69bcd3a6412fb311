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
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx  # lightkube 1.x runs on httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Node

from plainnet.allocator.assignment import NodeFacts, plan_assignments
from plainnet.datastore.kube_nodes import created_at, pod_cidrs
from plainnet.ipam.node_subnets import NodeSubnetAllocator
from plainnet.ipam.types import IPNetwork
from plainnet.retry import Backoff

log = logging.getLogger("plainnet.allocator")

IN_FLIGHT = 32
LEASE_NAME = "plainnet-allocator"
LEASE_NAMESPACE = "kube-system"


#: What a failed API call can raise: the API's answer, or no answer at all.
API_ERRORS: tuple[type[BaseException], ...] = (ApiError, httpx.HTTPError, OSError)


def _facts(node: Any) -> NodeFacts:
    return NodeFacts(node.metadata.name, pod_cidrs(node), created_at(node))


class LeaderLease:
    """A Lease-based leader lock (the same object kube-controller-manager uses)."""

    def __init__(self, client: AsyncClient, identity: str, duration: int = 15) -> None:
        self.client = client
        self.identity = identity
        self.duration = duration

    async def acquire(self) -> None:
        while not await self._try():
            await asyncio.sleep(self.duration / 3)
        log.info("leading as %s", self.identity)

    async def keep(self) -> None:
        """Renew until the lease is lost, or could not be renewed for as long as it
        lasts; then return (the caller stops acting)."""
        last_renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.duration / 3)
            if await self._try():
                last_renewed = asyncio.get_running_loop().time()
            elif asyncio.get_running_loop().time() - last_renewed >= self.duration * 2 / 3:
                log.warning("lost the leader lease")
                return

    async def _try(self) -> bool:
        """Take or renew the lease; False if another replica holds it or the API server
        could not be asked."""
        try:
            return await self._try_once()
        except API_ERRORS as exc:
            log.warning("leader lease: %s", exc)
            return False

    async def _try_once(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = await self.client.get(Lease, LEASE_NAME, namespace=LEASE_NAMESPACE)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            try:
                await self.client.create(
                    Lease(
                        metadata=ObjectMeta(name=LEASE_NAME, namespace=LEASE_NAMESPACE),
                        spec=LeaseSpec(
                            holderIdentity=self.identity,
                            leaseDurationSeconds=self.duration,
                            acquireTime=now,
                            renewTime=now,
                        ),
                    )
                )
                return True
            except ApiError:
                return False
        spec = lease.spec
        renewed = spec.renewTime if spec and spec.renewTime else None
        expired = renewed is None or (now - renewed).total_seconds() > (
            spec.leaseDurationSeconds or self.duration
        )
        if spec and spec.holderIdentity not in (None, self.identity) and not expired:
            return False
        lease.spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.duration,
            acquireTime=spec.acquireTime if spec else now,
            renewTime=now,
        )
        try:
            await self.client.replace(lease)  # carries resourceVersion: loses races cleanly
            return True
        except ApiError:
            return False


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
        self.nodes: dict[str, NodeFacts] = {}
        self._dirty = asyncio.Event()
        self._reported: set[tuple[str, str]] = set()
        self.assigned = 0

    async def run(self) -> None:
        """Lead, assign while leading, and start over when the lease is lost."""
        lease = LeaderLease(self.client, self.identity)
        while True:
            await lease.acquire()
            work = asyncio.create_task(self._work())
            keep = asyncio.create_task(lease.keep())
            done, _ = await asyncio.wait([work, keep], return_when=asyncio.FIRST_COMPLETED)
            for task in (work, keep):
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]  # a bug: say so

    async def _work(self) -> None:
        backoff = Backoff(first=0.5, limit=10.0)
        while True:
            try:
                revision = await self._list()
            except API_ERRORS as exc:
                log.warning("listing nodes failed: %s; retrying in %.1fs", exc, backoff.upcoming)
                await backoff.sleep()
                continue
            watcher = asyncio.create_task(self._watch(revision))
            try:
                while not watcher.done():
                    await self.reconcile()
                    waiter = asyncio.create_task(self._dirty.wait())
                    await asyncio.wait([waiter, watcher], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    self._dirty.clear()
            finally:
                watcher.cancel()
            if watcher.cancelled() or not watcher.result():
                log.info("node watch failed; relisting in %.1fs", backoff.upcoming)
                await backoff.sleep()
            else:
                backoff.reset()
                log.info("node watch ended; relisting")

    async def _list(self) -> int:
        nodes = self.client.list(Node)
        self.nodes = {}
        async for node in nodes:
            facts = _facts(node)
            self.nodes[facts.name] = facts
        return int(nodes.resourceVersion)

    async def _watch(self, revision: int) -> bool:
        """Follow Node changes; True if the watch ended normally, False if it failed
        (410 Gone, a network error): either way the caller relists."""
        try:
            async for kind, node in self.client.watch(Node, resource_version=str(revision)):
                if kind == "DELETED":
                    self.nodes.pop(node.metadata.name, None)  # its subnet is free again
                else:
                    self.nodes[node.metadata.name] = _facts(node)
                self._dirty.set()
        except API_ERRORS as exc:
            log.warning("node watch failed: %s", exc)
            return False
        return True

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
                            self._dirty.set()
                            return
                        await asyncio.sleep(0.1 * 2**attempt)
                    except API_ERRORS as exc:
                        log.warning("assigning a subnet to node %s failed: %s", node, exc)
                        await asyncio.sleep(0.1 * 2**attempt)
                else:
                    self._dirty.set()
                    return
            facts = self.nodes.get(node)
            if facts is not None:
                self.nodes[node] = NodeFacts(node, tuple(cidrs), facts.created)
            self.assigned += 1
            log.info("assigned %s to node %s", ", ".join(cidrs), node)

        await asyncio.gather(*(assign(a.node, a.subnets) for a in plan.assignments))
        for problem in plan.problems:
            await self._report(problem.node, problem.reason, problem.message)

    async def _report(self, node: str, reason: str, message: str) -> None:
        if (node, reason) in self._reported:
            return
        self._reported.add((node, reason))
        log.warning("node %s: %s: %s", node, reason, message)
        now = datetime.now(UTC)
        try:
            await self.client.create(
                Event(
                    metadata=ObjectMeta(generateName=f"{node}.", namespace="default"),
                    involvedObject=ObjectReference(kind="Node", name=node, uid=node),
                    reason=reason,
                    message=message,
                    type="Warning",
                    source={"component": "plainnet-allocator"},  # type: ignore[arg-type]
                    firstTimestamp=now,
                    lastTimestamp=now,
                    count=1,
                )
            )
        except API_ERRORS as exc:
            log.warning("could not record event for node %s: %s", node, exc)
