"""``plainnet cloud-routes``: keep the VPC's route tables equal to the cluster's nodes.

One pass: ask the cloud for its state (one paginated DescribeRouteTables and one
DescribeInstances, however many nodes), plan (:mod:`plainnet.cloud.plan`), make the
changes (a few at a time), turn source/destination checking off where it is still on,
set each Node's ``NetworkUnavailable`` condition where it changed, and report what
could not be served as Events. Passes run after the node list, on every change of a
node's route facts (podCIDRs, providerID, creation, deletion — not kubelet heartbeats)
and every ``period`` seconds, which is what brings back a route deleted by hand.

Failures only wait: throttling or an unreachable API ends the pass and the next one
comes after a backoff with jitter; one refused change is that node's problem, the rest
are still made. A table the API says is full (``RouteLimitExceeded``) is taken to hold
no more routes than it had then, so the nodes beyond get ``RouteTableFull`` without the
controller retrying in a loop. Only the holder of the Lease ``plainnet-cloud-routes``
acts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any, Literal

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from plainnet.cloud.plan import NodeFacts, RouteChange, RoutePlan, plan_routes
from plainnet.cloud.provider import ROUTE_LIMIT_EXCEEDED, CloudError, RouteProvider
from plainnet.controllers import API_ERRORS
from plainnet.controllers.events import NodeEvents
from plainnet.controllers.lease import LeaderLease
from plainnet.controllers.nodes import NodeCache, while_leading
from plainnet.datastore.kube_nodes import created_at, pod_cidrs
from plainnet.ipam.types import IPNetwork
from plainnet.retry import Backoff
from plainnet.text import printable

log = logging.getLogger("plainnet.cloud")

LEASE_NAME = "plainnet-cloud-routes"
COMPONENT = "plainnet-cloud-routes"
IN_FLIGHT = 4


class CloudRoutesMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.routes = Gauge(
            "plainnet_cloud_routes", "Cluster routes, by state", ["state"], registry=r
        )
        self.calls = Counter(
            "plainnet_cloud_api_calls", "Cloud API calls, by operation", ["operation"], registry=r
        )
        self.errors = Counter(
            "plainnet_cloud_api_errors",
            "Cloud API calls that failed, by operation and error code",
            ["operation", "code"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "plainnet_cloud_reconcile_seconds",
            "Duration of one pass",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def on_call(self, operation: str, error: str | None) -> None:
        self.calls.labels(operation).inc()
        if error is not None:
            self.errors.labels(operation, error).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _facts(node: Any) -> NodeFacts:
    spec = node.spec
    return NodeFacts(
        name=node.metadata.name,
        uid=node.metadata.uid or node.metadata.name,
        provider_id=spec.providerID if spec else None,
        pod_cidrs=pod_cidrs(node),
        created=created_at(node),
    )


class CloudRoutes:
    def __init__(
        self,
        client: AsyncClient,
        provider: RouteProvider,
        cluster_cidrs: list[IPNetwork],
        *,
        route_limit: int = 50,
        period: float = 30.0,
        identity: str | None = None,
        metrics: CloudRoutesMetrics | None = None,
        target: Literal["instance", "network-interface"] = "instance",
    ) -> None:
        self.client = client
        self.provider = provider
        self.cluster_cidrs = cluster_cidrs
        self.route_limit = route_limit
        self.period = period
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = metrics or CloudRoutesMetrics()
        self.target = target
        self.cache: NodeCache[NodeFacts] = NodeCache(client, _facts)
        self.events = NodeEvents(client, COMPONENT)
        #: the NetworkUnavailable condition this controller last set, by node
        self.conditions: dict[str, tuple[str, str]] = {}
        #: tables the API called full, and at how many routes
        self.learned_limits: dict[str, int] = {}
        self.backoff = Backoff(first=1.0, limit=60.0, jitter=0.5)
        self.passes = 0
        self.last_pass_ok: float | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        lease = LeaderLease(self.client, LEASE_NAME, self.identity)
        await while_leading(lease, lambda: self.cache.follow(self.reconcile, self.period))

    # --- one pass ------------------------------------------------------------------------

    async def reconcile(self) -> None:
        started = time.monotonic()
        try:
            plan = await self._pass()
        except CloudError as exc:
            self.last_error = str(exc)
            delay = self.backoff.delay()
            log.warning("cloud routes pass failed: %s; next in %.1fs", printable(str(exc)), delay)
            await asyncio.sleep(delay)
            self.cache.changed.set()  # try again at once after the wait
            return
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        self.backoff.reset()
        self.passes += 1
        self.last_pass_ok = time.monotonic()
        self.last_error = None
        self.metrics.routes.labels("desired").set(plan.desired)
        self.metrics.routes.labels("present").set(plan.present)

    async def _pass(self) -> RoutePlan:
        nodes = list(self.cache.nodes.values())
        cloud = await asyncio.to_thread(self.provider.state)
        limits = {t: min(n, self.route_limit) for t, n in self.learned_limits.items()}
        plan = plan_routes(nodes, cloud, self.cluster_cidrs, limits, self.route_limit, self.target)
        failed = await self._apply(plan.changes)
        routed = plan.routed - failed
        for instance in plan.source_dest_check:
            await self._disable_source_dest_check(instance, nodes)
        for problem in plan.problems:
            await self.events.warn(problem.node, problem.reason, problem.message, problem.uid)
        for node in nodes:
            if node.name in routed:
                self.events.forget(node.name)
        await self._set_conditions(nodes, routed)
        self.metrics.routes.labels("failed").set(len(failed))
        return plan

    async def _apply(self, changes: list[RouteChange]) -> set[str]:
        """Make the changes, deletes first (they free room); returns the nodes one of
        whose changes was refused. Throttling and an unreachable API end the pass."""
        slots = asyncio.Semaphore(IN_FLIGHT)
        failed: set[str] = set()
        full: set[str] = set()

        async def make(change: RouteChange) -> None:
            if change.table in full and change.operation == "create":
                failed.add(change.node or "")
                return
            async with slots:
                try:
                    await asyncio.to_thread(self.provider.apply, change)
                except CloudError as exc:
                    if exc.transient:
                        raise
                    if exc.code == ROUTE_LIMIT_EXCEEDED:
                        full.add(change.table)
                    self._refused(change, exc)
                    if change.node:
                        failed.add(change.node)
                    return
            if change.operation != "replace":
                log.info(
                    "%s route %s in %s%s",
                    "created" if change.operation == "create" else "deleted",
                    change.destination,
                    change.table,
                    f" -> {change.target} (node {printable(change.node)})" if change.node else "",
                )

        deletes = [c for c in changes if c.operation == "delete"]
        others = [c for c in changes if c.operation != "delete"]
        for batch in (deletes, others):
            results = await asyncio.gather(*(make(c) for c in batch), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if full:
            state = await asyncio.to_thread(self.provider.state)
            for table in state.tables:
                if table.id in full:
                    self.learned_limits[table.id] = len(table.routes)
                    log.warning(
                        "route table %s is full at %d routes (RouteLimitExceeded)",
                        table.id,
                        len(table.routes),
                    )
        return failed

    def _refused(self, change: RouteChange, exc: CloudError) -> None:
        log.warning(
            "%s of route %s in %s refused: %s",
            change.operation,
            change.destination,
            change.table,
            printable(str(exc)),
        )

    async def _disable_source_dest_check(self, instance: str, nodes: list[NodeFacts]) -> None:
        try:
            await asyncio.to_thread(self.provider.disable_source_dest_check, instance)
            log.info("turned source/destination check off on %s", instance)
        except CloudError as exc:
            if exc.transient:
                raise
            node = next((n for n in nodes if n.provider_id and instance in n.provider_id), None)
            if node is not None:
                await self.events.warn(
                    node.name,
                    "SourceDestCheckNotDisabled",
                    f"cannot turn source/destination check off on {instance} ({exc.code}): "
                    f"the VPC drops this node's pod traffic; allow ec2:ModifyInstanceAttribute "
                    f"or turn it off by hand",
                    node.uid,
                )

    async def _set_conditions(self, nodes: list[NodeFacts], routed: set[str]) -> None:
        """NetworkUnavailable False/RouteCreated on routed nodes, True/NoRouteCreated on
        the others — only where it changed (a patch of nodes/status each)."""
        for node in nodes:
            wanted = (
                ("False", "RouteCreated") if node.name in routed else ("True", "NoRouteCreated")
            )
            if self.conditions.get(node.name) == wanted:
                continue
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            message = (
                "plainnet cloud-routes created a route to this node"
                if wanted[0] == "False"
                else "plainnet cloud-routes has no route to this node yet"
            )
            condition = {
                "type": "NetworkUnavailable",
                "status": wanted[0],
                "reason": wanted[1],
                "message": message,
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }
            try:
                await self.client.patch(
                    Node.Status,
                    node.name,
                    {"status": {"conditions": [condition]}},
                    patch_type=PatchType.STRATEGIC,
                )
            except API_ERRORS as exc:
                log.warning(
                    "setting NetworkUnavailable on %s failed: %s", printable(node.name), exc
                )
                continue
            self.conditions[node.name] = wanted
        for gone in set(self.conditions) - {n.name for n in nodes}:
            del self.conditions[gone]

    # --- health --------------------------------------------------------------------------

    def alive(self) -> tuple[bool, str]:
        return True, f"ok ({self.passes} passes)"

    def ready(self) -> tuple[bool, str]:
        if self.last_error:
            return False, self.last_error
        if self.last_pass_ok is None:
            return False, "no pass yet (not leading, or the cloud or API server not answering)"
        return True, f"ok ({self.passes} passes)"
