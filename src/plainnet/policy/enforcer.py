"""``plainnet agent --network-policy``: keep ``inet plainnet-policy`` equal to what the
cluster's NetworkPolicies say for this node's pods.

Level-triggered like the routes: every NetworkPolicy, Pod and Namespace is kept from a
list and a watch (relisted every :data:`RELIST_SECONDS`, and whenever a watch fails),
parsed as it arrives; any change marks the table dirty, and one apply compiles the
whole ruleset from all objects and changes the kernel's table by the difference to the
last one applied, in one transaction. A burst of changes within :data:`BATCH_SECONDS`
costs one apply. Every ``resync`` seconds (and after any failure) the table is
replaced whole, so a hand-edited or deleted table converges.

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
from lightkube.resources import core_v1
from lightkube.resources.networking_v1 import NetworkPolicy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plainnet.controllers import API_ERRORS
from plainnet.nft import NftError
from plainnet.policy import nft as policy_nft
from plainnet.policy.compiler import (
    CompiledRuleset,
    cleanup_script,
    compile_ruleset,
    update_script,
)
from plainnet.policy.model import (
    Cluster,
    Pod,
    Problem,
    parse_namespace,
    parse_pod,
    parse_policy,
)
from plainnet.retry import Backoff, supervise
from plainnet.text import printable

log = logging.getLogger("plainnet.policy")

RELIST_SECONDS = 300.0
BATCH_SECONDS = 0.002
#: The drop counters are read after an update at most this often (and at each resync).
COUNT_SECONDS = 5.0
#: Problems (a broken peer, a port that is none) logged one line each up to this many
#: new ones per apply; the rest are counted.
PROBLEM_LINES = 20

KINDS: dict[str, Any] = {
    "policies": NetworkPolicy,
    "pods": core_v1.Pod,
    "namespaces": core_v1.Namespace,
}


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


def _parse(kind: str, document: dict) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    if kind == "policies":
        return parse_policy(document, problems), problems
    try:
        return (parse_pod if kind == "pods" else parse_namespace)(document), problems
    except ValueError as exc:
        return None, [Problem(f"a {kind[:-1]}", str(exc))]


def _inert(value: Any) -> bool:
    """A new pod that no policy can see yet: no address (it is not scheduled, or its
    sandbox is not up)."""
    return isinstance(value, Pod) and not value.addresses


class PolicyObjects:
    """Every NetworkPolicy, Pod and Namespace, parsed as it arrives, from a list and a
    watch each."""

    def __init__(self, client: AsyncClient, on_change: Callable[[], None]) -> None:
        self.client = client
        self.on_change = on_change
        #: kind -> namespace/name -> (parsed value or None, its problems)
        self.objects: dict[str, dict[str, tuple[Any, list[Problem]]]] = {k: {} for k in KINDS}
        self.listed: set[str] = set()
        #: kind -> how many times its objects changed (a compile over unchanged pods and
        #: namespaces may take over the last one's peer work)
        self.generation: dict[str, int] = dict.fromkeys(KINDS, 0)

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
                    items[_key(document)] = _parse(kind, document)
                self.objects[kind] = items
                self.listed.add(kind)
                self.generation[kind] += 1
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
            key = _key(document)
            if event == "DELETED":
                if items.pop(key, None) is None:
                    continue
            else:
                parsed = _parse(kind, document)
                old = items.get(key)
                items[key] = parsed
                if old == parsed or (old is None and _inert(parsed[0])):
                    continue  # nothing a policy sees changed (a kubelet's status write)
            self.generation[kind] += 1
            self.on_change()

    def snapshot(self) -> tuple[Cluster, list[Problem]]:
        """Everything as of now (the parsed values are immutable: a worker thread may
        compile from them while the watches go on)."""
        values = {kind: list(items.values()) for kind, items in self.objects.items()}
        problems = [p for items in values.values() for _, found in items for p in found]
        namespaces = {n.name: n for n, _ in values["namespaces"] if n is not None}
        cluster = Cluster(
            [p for p, _ in values["policies"] if p is not None],
            [p for p, _ in values["pods"] if p is not None],
            namespaces,
        )
        return cluster, problems


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
        #: the pod and namespace generations the last compile saw
        self._compiled_inputs: tuple[int, int] | None = None
        self._counted = 0.0
        #: drop counter readings by chain, at the last count
        self._drops_seen: dict[str, int] = {}

    async def run_supervised(self) -> None:
        """:meth:`run` for ever: a failure (a bug) is logged and it starts again; the
        table in the kernel keeps enforcing meanwhile."""

        def failed(delay: float) -> None:
            self.last_error = "the enforcer failed"
            log.exception("network policy enforcer failed; again in %.1fs", delay)

        await supervise(self.run, Backoff(first=1.0, limit=30.0), failed)

    async def run(self) -> None:
        followers = [asyncio.create_task(self.objects.follow(k)) for k in KINDS]
        try:
            while True:
                resync = False
                try:
                    await asyncio.wait_for(self.dirty.wait(), self.resync)
                except TimeoutError:
                    resync = True
                if len(self.objects.listed) < len(KINDS):
                    continue  # not everything listed yet: keep what enforces now
                await asyncio.sleep(BATCH_SECONDS)
                self.dirty.clear()
                await self.enforce(whole=resync)
        finally:
            for task in followers:
                task.cancel()

    async def enforce(self, whole: bool = False) -> None:
        """Compile from all objects and bring the kernel's table there: by the
        difference to the last applied table, or ``whole``."""
        started = time.perf_counter()
        cluster, problems = self.objects.snapshot()
        inputs = (self.objects.generation["pods"], self.objects.generation["namespaces"])
        reuse = self.applied if not whole and inputs == self._compiled_inputs else None
        ruleset = await asyncio.to_thread(compile_ruleset, cluster, self.node, reuse)
        self._compiled_inputs = inputs
        self._report(problems, ruleset)
        previous = None if whole else self.applied
        if previous is None:
            script, cleanup = ruleset.text, ""
        else:
            script, cleanup = update_script(previous, ruleset), cleanup_script(previous, ruleset)
        try:
            changed = await asyncio.to_thread(
                self._apply, script, cleanup, previous is None, ruleset
            )
        except NftError as exc:
            self.last_error = str(exc)
            self.applied = None  # the next apply replaces the table whole
            self.metrics.applies.labels("failed").inc()
            delay = self.backoff.delay()
            log.error("%s; the previous table stays; again in %.1fs", printable(str(exc)), delay)
            asyncio.get_running_loop().call_later(delay, self.dirty.set)
            return
        elapsed = changed - started
        self.backoff.reset()
        self.last_error = None
        self.metrics.applies.labels("ok").inc()
        self.metrics.apply_seconds.observe(elapsed)
        self.metrics.policies.set(ruleset.policies)
        self.metrics.selected.set(ruleset.selected_pods)
        self.metrics.rules.set(ruleset.rules)
        if (script or cleanup) and (self.applied is None or self.applied.chains != ruleset.chains):
            log.info(
                "network policy table %s: %d policies, %d of this node's pods isolated, "
                "%d rules (%.0f ms)",
                "replaced" if previous is None else "updated",
                ruleset.policies,
                ruleset.selected_pods,
                ruleset.rules,
                elapsed * 1000,
            )
        self.applied = ruleset

    def _apply(self, script: str, cleanup: str, whole: bool, ruleset: CompiledRuleset) -> float:
        """On a thread: change the table (``whole``: ``script`` replaces it); returns
        when the change was in (:func:`time.perf_counter`), before the cleanup.
        The drop counters are read after an update (off the path of the change; a pod
        chain deleted by it takes its last drops since the previous reading along), and
        before a whole replacement, whose counters start at zero."""
        if whole:
            if self.applied is not None:
                self._count_drops(self.applied)
            self._drops_seen = {}
        if script:
            policy_nft.run(script, whole)
        changed = time.perf_counter()
        if cleanup:
            policy_nft.run(cleanup, False)
        if not whole and time.monotonic() - self._counted > COUNT_SECONDS:
            self._count_drops(ruleset)
        return changed

    def _count_drops(self, table: CompiledRuleset) -> None:
        """Add what each pod chain of ``table`` dropped since the last reading."""
        self._counted = time.monotonic()
        seen = {}
        for chain, packets in policy_nft.dropped_packets().items():
            seen[chain] = packets
            owner = table.owners.get(chain)
            new = packets - self._drops_seen.get(chain, 0)
            if owner and new > 0:
                self.metrics.dropped.labels(owner[0], owner[1].lower()).inc(new)
        self._drops_seen = seen

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
