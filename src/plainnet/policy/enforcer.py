"""``plainnet agent --network-policy``: keep ``inet plainnet-policy`` equal to what the
cluster's NetworkPolicies say for this node's pods.

Level-triggered like the routes: every NetworkPolicy, Pod and Namespace is kept from a
list and a watch (relisted every :data:`RELIST_SECONDS`, and whenever a watch fails);
any change marks the table dirty, and one apply compiles the whole ruleset from all
objects and replaces the table in one transaction. A burst of changes within
:data:`BATCH_SECONDS` costs one apply. Every ``resync`` seconds the table is applied
again whatever happened, so a hand-edited or deleted table converges.

Fail-closed: nothing is applied until all three kinds have been listed (half a view
could open pods a policy isolates); a failed apply leaves the previous table
enforcing, is logged and retried with backoff; when the agent stops or crashes the
last table stays in the kernel (``plainnet agent cleanup`` removes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.resources.networking_v1 import NetworkPolicy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plainnet.controllers import API_ERRORS
from plainnet.nft import NftError
from plainnet.policy import nft as policy_nft
from plainnet.policy.compiler import CompiledRuleset, compile_ruleset
from plainnet.policy.model import Problem, parse_cluster
from plainnet.retry import Backoff
from plainnet.text import printable

log = logging.getLogger("plainnet.policy")

RELIST_SECONDS = 300.0
BATCH_SECONDS = 0.01
#: Problems (a broken peer, a port that is none) logged one line each up to this many
#: new ones per apply; the rest are counted.
PROBLEM_LINES = 20

KINDS: dict[str, Any] = {"policies": NetworkPolicy, "pods": Pod, "namespaces": Namespace}


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.policies = Gauge("plainnet_policy_policies", "NetworkPolicies seen", registry=r)
        self.selected = Gauge(
            "plainnet_policy_selected_pods", "This node's pods a policy isolates", registry=r
        )
        self.rules = Gauge("plainnet_policy_rules", "Rules in the policy table", registry=r)
        self.apply_seconds = Histogram(
            "plainnet_policy_apply_seconds",
            "Compile and apply of the policy table",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.applies = Counter(
            "plainnet_policy_applies", "Applies of the policy table, by result", ["result"],
            registry=r,
        )  # fmt: skip
        self.problems = Counter(
            "plainnet_policy_problems", "Pieces of policies refused (they allow nothing)",
            registry=r,
        )  # fmt: skip
        self.dropped = Counter(
            "plainnet_policy_dropped_packets",
            "Packets dropped by policy, by pod and direction",
            ["pod", "direction"],
            registry=r,
        )


def _key(document: dict) -> str:
    metadata = document.get("metadata") or {}
    return f"{metadata.get('namespace') or ''}/{metadata.get('name')}"


class PolicyObjects:
    """Every NetworkPolicy, Pod and Namespace, as API dicts, from a list and a watch each."""

    def __init__(self, client: AsyncClient, on_change: Callable[[], None]) -> None:
        self.client = client
        self.on_change = on_change
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self.listed: set[str] = set()

    async def follow(self, kind: str) -> None:
        resource = KINDS[kind]
        scope = {"namespace": "*"} if kind != "namespaces" else {}
        backoff = Backoff(first=0.5, limit=10.0)
        while True:
            try:
                listing = self.client.list(resource, **scope)
                items = {}
                async for item in listing:
                    document = item.to_dict()
                    items[_key(document)] = document
                self.objects[kind] = items
                self.listed.add(kind)
                self.on_change()
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RELIST_SECONDS):
                        await self._watch(kind, resource, scope, str(listing.resourceVersion))
            except API_ERRORS as exc:
                log.warning("%s: list or watch failed: %s; again in %.1fs", kind, exc,
                            backoff.upcoming)  # fmt: skip
                await backoff.sleep()

    async def _watch(self, kind: str, resource: Any, scope: dict, version: str) -> None:
        items = self.objects[kind]
        async for event, item in self.client.watch(resource, resource_version=version, **scope):
            document = item.to_dict()
            if event == "DELETED":
                items.pop(_key(document), None)
            else:
                items[_key(document)] = document
            self.on_change()

    def snapshot(self) -> tuple[list[dict], list[dict], list[dict]]:
        return (
            list(self.objects["policies"].values()),
            list(self.objects["pods"].values()),
            list(self.objects["namespaces"].values()),
        )


def compile_for(node: str, objects: tuple[list, list, list]) -> tuple[CompiledRuleset, list]:
    cluster, problems = parse_cluster(*objects)
    return compile_ruleset(cluster, node), problems


class PolicyEnforcer:
    def __init__(
        self, client: AsyncClient, node: str, metrics: PolicyMetrics, resync: float = 60.0
    ) -> None:
        self.node = node
        self.metrics = metrics
        self.resync = resync
        self.dirty = asyncio.Event()
        self.objects = PolicyObjects(client, self.dirty.set)
        self.backoff = Backoff(first=0.5, limit=30.0)
        self.applied: CompiledRuleset | None = None
        self.last_error: str | None = None
        self._logged: set[Problem] = set()

    async def run_supervised(self) -> None:
        """:meth:`run` for ever: a failure (a bug) is logged and it starts again; the
        table in the kernel keeps enforcing meanwhile."""
        backoff = Backoff(first=1.0, limit=30.0)
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.last_error = "the enforcer failed"
                log.exception("network policy enforcer failed; again in %.1fs", backoff.upcoming)
                await backoff.sleep()

    async def run(self) -> None:
        followers = [asyncio.create_task(self.objects.follow(k)) for k in KINDS]
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.dirty.wait(), self.resync)
                if len(self.objects.listed) < len(KINDS):
                    continue  # not everything listed yet: keep what enforces now
                await asyncio.sleep(BATCH_SECONDS)
                self.dirty.clear()
                await self.enforce()
        finally:
            for task in followers:
                task.cancel()

    async def enforce(self) -> None:
        started = time.perf_counter()
        ruleset, problems = await asyncio.to_thread(compile_for, self.node, self.objects.snapshot())
        self._report(problems, ruleset)
        try:
            await asyncio.to_thread(self._replace, ruleset)
        except NftError as exc:
            self.last_error = str(exc)
            self.metrics.applies.labels("failed").inc()
            delay = self.backoff.delay()
            log.error("%s; the previous table stays; again in %.1fs", printable(str(exc)), delay)
            asyncio.get_running_loop().call_later(delay, self.dirty.set)
            return
        elapsed = time.perf_counter() - started
        self.backoff.reset()
        self.last_error = None
        self.metrics.applies.labels("ok").inc()
        self.metrics.apply_seconds.observe(elapsed)
        self.metrics.policies.set(ruleset.policies)
        self.metrics.selected.set(ruleset.selected_pods)
        self.metrics.rules.set(ruleset.rules)
        if self.applied is None or self.applied.text != ruleset.text:
            log.info(
                "network policy table applied: %d policies, %d of this node's pods isolated, "
                "%d rules (%.0f ms)",
                ruleset.policies,
                ruleset.selected_pods,
                ruleset.rules,
                elapsed * 1000,
            )
        self.applied = ruleset

    def _replace(self, ruleset: CompiledRuleset) -> None:
        """On a thread: count what the old table dropped, then replace it."""
        self._count_drops()
        policy_nft.apply(ruleset)

    def _count_drops(self) -> None:
        if self.applied is None:
            return
        for chain, packets in policy_nft.dropped_packets().items():
            owner = self.applied.chains.get(chain)
            if owner and packets:
                self.metrics.dropped.labels(owner[0], owner[1].lower()).inc(packets)

    def _report(self, problems: list[Problem], ruleset: CompiledRuleset) -> None:
        new = [p for p in problems if p not in self._logged]
        for problem in new[:PROBLEM_LINES]:
            log.warning("network policy: %s", problem)
        if len(new) > PROBLEM_LINES:
            log.warning("network policy: %d more problems", len(new) - PROBLEM_LINES)
        self.metrics.problems.inc(len(new))
        self._logged = set(problems)
        if self.applied is None or ruleset.conflicts != self.applied.conflicts:
            for conflict in ruleset.conflicts[:PROBLEM_LINES]:
                log.warning("network policy: pod address %s", printable(conflict))

    def ready(self) -> tuple[bool, str]:
        if self.last_error:
            return False, f"network policy: {self.last_error}"
        if self.applied is None:
            return False, "network policy: not applied yet (listing policies, pods, namespaces)"
        return True, "ok"
