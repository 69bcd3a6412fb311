"""One level-triggered pass at a time: desired state from all records, diff against
the kernel, apply.

The reconciler owns the kernel snapshot — what the kernel holds of plainnet's, and
the routing context it was read with (this node's networks, the backend's links) —
and invalidates it in one place (:meth:`KernelSnapshot.invalidate`): on a resync, a
relevant netlink event, a kernel refusal or a failed pass. A pass with a valid snapshot
diffs against it without a dump and updates it with what it changed.

When the only news is a few changed records, the peer view is updated for those alone
(:meth:`~plainnet.agent.peer_view.PeerView.update` guarantees the result of a rebuild,
or declines) and only their routes and entries are planned; everything else is a full
pass.

Kernel work — dumps, batched applies, backend devices — runs on one worker thread,
and so does the bulk computation of a full pass (rebuilding the view from a copy of the
records, diffing everything): the asyncio loop keeps reading datastore and netlink
events meanwhile, holding the loop only for an incremental pass (O(changes)) and the
bookkeeping around the worker's results. Python switches threads every few
milliseconds, so a 20,000-peer pass never holds the loop for long at a time
(``plainnet_reconcile_loop_seconds``, ``plainnet_event_loop_lag_seconds``). Events that
arrive during a pass are still served by the next pass, once this one is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from plainnet.agent.backends import all_device_names, other_backends
from plainnet.agent.backends.base import Backend, NodeIdentity, RoutingContext
from plainnet.agent.kernel_model import KernelRefusal
from plainnet.agent.local_networks import LocalNetwork, node_networks
from plainnet.agent.metrics import AgentMetrics
from plainnet.agent.netlink import EventFilter
from plainnet.agent.peer_view import CarriedOver, PeerView
from plainnet.agent.plan import (
    KernelState,
    Plan,
    apply_plan_to_state,
    plan_changes,
    plan_entries,
    plan_subset,
)
from plainnet.agent.validation import Refusal
from plainnet.datastore.records import PeerRecord, Record
from plainnet.ipam.types import IPNetwork
from plainnet.retry import Backoff

log = logging.getLogger("plainnet.agent")

#: The thread a resync's rebuild runs on, beside the kernel thread.
_AUDITOR = ThreadPoolExecutor(1, thread_name_prefix="plainnet-audit")

T = TypeVar("T")

#: Changes listed one per log line up to this many; beyond, a summary line.
DETAILED_LOG_LIMIT = 20
#: Passes with more changed records than this are full passes (as cheap by then).
INCREMENTAL_LIMIT = 256


class RefusalLog:
    """Refusal log lines, rate-limited: the first ``burst`` in a ``window`` are logged
    (each a record's first refusal for its reason), the rest are counted by reason and
    summed up in one line when the window has passed. A flood of thousands of hostile
    puts is a few dozen lines, not a megabyte; the metric still counts every one."""

    def __init__(self, burst: int = 20, window: float = 10.0, clock=time.monotonic) -> None:
        self.burst, self.window, self.clock = burst, window, clock
        self._started = clock()
        self._logged = 0
        self._suppressed: dict[str, int] = {}

    def report(self, refusal: Refusal) -> None:
        self._roll()
        if self._logged < self.burst:
            self._logged += 1
            log.warning("%s", refusal.log_line())
        else:
            self._suppressed[refusal.reason] = self._suppressed.get(refusal.reason, 0) + 1

    def flush(self) -> None:
        self._roll()

    def _roll(self) -> None:
        now = self.clock()
        if now - self._started < self.window:
            return
        if self._suppressed:
            total = sum(self._suppressed.values())
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self._suppressed.items()))
            log.warning(
                "refused %d more peer records in the last %.0fs (%s); not logged one by one",
                total,
                now - self._started,
                reasons,
            )
        self._started, self._logged, self._suppressed = now, 0, {}


class Kernel(Protocol):
    """What the reconciler needs of the kernel (:class:`~plainnet.agent.kernel.KernelRoutes`
    in the agent; a fake in the loop's unit tests)."""

    def read_state(
        self, devices: Iterable[int] = (), known: KernelState | None = None
    ) -> KernelState: ...

    def apply(self, plan: Plan) -> list[KernelRefusal]: ...

    def local_networks(self, own_devices: Collection[str] = ()) -> list[LocalNetwork]: ...

    def link_index(self, name: str) -> int | None: ...

    def event_socket(self) -> socket.socket: ...

    def interface_mtu(self, ifindex: int) -> int: ...

    def enable_forwarding(self, versions: Iterable[int]) -> list[str]: ...

    def close(self) -> None: ...


class KernelWorker:
    """The one thread kernel work (and a full pass's computation) runs on: the lean
    netlink socket is not thread-safe, pyroute2's synchronous API refuses to run inside
    the asyncio loop, and one thread keeps requests in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kernel")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        """Wait for the running request (a batch is never cut in half), then stop."""
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class KernelSnapshot:
    """The kernel side of the last pass; ``state`` None: read it afresh next pass."""

    state: KernelState | None = None
    context: RoutingContext | None = None
    generation: int = 0

    def invalidate(self) -> None:
        self.state = None
        self.context = None
        self.generation += 1

    def store(self, state: KernelState, context: RoutingContext, generation: int) -> None:
        """Keep what a pass read — unless it was invalidated while being read."""
        if generation == self.generation:
            self.state, self.context = state, context


@dataclass(frozen=True)
class Agreement:
    """The last full diff that found nothing to change: the kernel state it read
    (unchanged since: ``state.fingerprint`` still set) and the view it matched, as of
    its number of updates. While both hold, a resync whose kernel read gives back that
    very state (its routes byte for byte unchanged) has nothing to diff."""

    state: KernelState
    view: PeerView
    updates: int

    def holds(self, view: PeerView | None) -> bool:
        return (
            view is self.view
            and view.updates == self.updates
            and self.state.fingerprint is not None
        )


class Reconciler:
    def __init__(
        self,
        node: NodeIdentity,
        own: PeerRecord,
        backend: Backend,
        cluster_cidrs: list[IPNetwork],
        kernel: Kernel,
        worker: KernelWorker,
        metrics: AgentMetrics,
        protocol: int,
        node_prefixes: Mapping[int, int] | None = None,
    ) -> None:
        self.node = node
        self.node_prefixes = node_prefixes
        self.own = own
        self.backend = backend
        self.cluster_cidrs = cluster_cidrs
        self.kernel = kernel
        self.worker = worker
        self.metrics = metrics
        self.protocol = protocol
        self.snapshot = KernelSnapshot()
        self.view: PeerView | None = None
        self.agreement: Agreement | None = None
        self.passes = 0
        self._awaited = 0.0  # of the running pass: seconds spent waiting for the worker
        self._epoch = 0  # bumped whenever the view is dropped
        #: Backs off retries after kernel refusals and failed passes.
        self.retry_backoff = Backoff(first=1.0, limit=30.0)
        self.events = EventFilter(cluster=tuple(cluster_cidrs))
        #: key -> detail of every refusal already reported (logged and counted).
        self._reported: dict[str, str] = {}
        self.refusal_log = RefusalLog()
        self._own_devices = all_device_names()
        self._others = other_backends(backend)
        #: The resync's rebuild running beside the passes (see :meth:`_start_audit`), the
        #: keys changed since it copied the records (None: unknown), and who to wake
        #: when it is done (the reactor marks itself dirty).
        self._audit: Future[PeerView] | None = None
        self._audit_changed: set[str] | None = set()
        self._audit_epoch = 0
        self.wake: Callable[[str], None] = lambda trigger: None

    def adopt(self, own: PeerRecord, node: NodeIdentity) -> None:
        """This node's record or identity changed (restored under another subnet):
        every decision may depend on it."""
        self.own, self.node = own, node
        self.forget()

    def forget(self) -> None:
        """After a failed pass: nothing half-updated survives it."""
        self.view = None
        self.agreement = None
        self._epoch += 1
        self._audit = None
        self.snapshot.invalidate()

    def _start_audit(self, records: Mapping[str, Record]) -> None:
        """Rebuild the view from the records on a thread of its own, beside the passes:
        a resync trusts nothing derived, but a rebuild of 20,000 peers takes most of a
        second, and a peer's new record must not wait behind it. The passes meanwhile
        note the keys that change; the pass that finds the audit done brings it up to
        date with them and takes it over (:meth:`_take_audit`)."""
        view = self.view
        if self._audit is not None or view is None or view.updates == 0:
            return  # running already; nothing to check; or exactly what it would build
        loop = asyncio.get_running_loop()
        epoch = self._epoch
        copied = dict(records)
        previous = view.carried_over()  # per-record results, copied on this thread

        def rebuild() -> PeerView:
            return self._rebuild(view.context, copied, previous)

        self._audit = _AUDITOR.submit(rebuild)
        self._audit_changed = set()
        self._audit_epoch = epoch

        def done(_: Future[PeerView]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the agent stopped
                loop.call_soon_threadsafe(self.wake, "audit")

        self._audit.add_done_callback(done)

    def _take_audit(
        self, context: RoutingContext, records: Mapping[str, Record], changed: set[str] | None
    ) -> bool:
        """If the audit is done: make it the view, brought up to date with the keys
        changed since it started; whether it was taken."""
        audit = self._audit
        if audit is None:
            return False
        if changed is None:
            self._audit_changed = None
        elif self._audit_changed is not None:
            self._audit_changed |= changed
        if not audit.done():
            return False
        self._audit = None
        pending = self._audit_changed
        if audit.exception() is not None:
            log.error("the resync's rebuild failed: %s", audit.exception())
            return False
        view = audit.result()
        if pending is None or self._audit_epoch != self._epoch or view.context is not context:
            return False  # overtaken: a full pass has rebuilt meanwhile
        if pending and view.update(records, pending) is None:
            return False
        self.view = view
        return True

    # --- one pass ------------------------------------------------------------------------

    async def run_pass(
        self, triggers: set[str], take_changed: Callable[[], set[str] | None], records: Mapping
    ) -> bool:
        """One pass; returns whether the kernel refused something (retry later)."""
        started = time.perf_counter()
        self._awaited = 0.0
        if "resync" in triggers:
            # A resync trusts nothing derived: the kernel is read again, and the view is
            # rebuilt from the records (beside the passes: :meth:`_start_audit`), so no
            # entry an update got wrong can outlive it.
            self.snapshot.invalidate()
        fresh = self.snapshot.state is None
        agreement = self.agreement if self.agreement and self.agreement.holds(self.view) else None
        if fresh:
            generation = self.snapshot.generation
            known = agreement.state if agreement else None
            context, state = await self._on_worker(self._read_kernel, known)
            self.snapshot.store(state, context, generation)
        else:
            assert self.snapshot.context is not None and self.snapshot.state is not None
            context, state = self.snapshot.context, self.snapshot.state
        # The records as of now: changed keys and records taken without an await between.
        changed = take_changed()
        audited = self._take_audit(context, records, changed)
        if audited:
            changed = set()
        view, touched = self._incremental_view(context, records, changed)
        if audited:
            touched = None  # a new view: every destination, every refusal
        elif "resync" in triggers:
            self._start_audit(records)
        if view is None:
            # A rebuild (~10 µs a peer) runs on the worker thread, from a copy of the
            # records: the loop keeps reading events while it computes.
            epoch = self._epoch
            view = await self._on_worker(self._rebuild, context, dict(records))
            if epoch == self._epoch:  # not adopted or forgotten meanwhile
                self.view = view
        if touched is None or changed:
            self._report_refusals(view.refusals, None if touched is None else changed)
        if agreement and state is agreement.state and agreement.holds(view):
            # The kernel holds what the last full diff found right, and the view is the
            # one it matched: nothing to diff.
            plan = Plan()
        elif touched is None or fresh:
            plan = await self._on_worker(self._full_plan, view, state)
        else:
            plan = plan_subset(view.desired, state, touched, view.nexthop_refs)
            entries_touched = view.touched_entries if changed else (set(), set())
            plan_entries(plan, view.entries, state.entries, entries_touched)
        refused = False
        if plan:
            refusals = await self._on_worker(self.kernel.apply, plan)
            failed_routes = {r.subject for r in refusals if r.kind == "route"}
            apply_plan_to_state(plan, state, failed_routes, self.protocol)  # type: ignore[arg-type]
            self._log_plan(plan, refusals)
            self._count(plan)
            if refusals:
                self.metrics.kernel_errors.inc(len(refusals))
                self.snapshot.invalidate()
                refused = True
        if not plan and (touched is None or fresh):
            self.agreement = Agreement(state, view, view.updates)
        elif plan:
            self.agreement = None
        if fresh:
            removed = await self._on_worker(self._remove_leftovers)
            for name in removed:
                log.info("removed %s: this node now runs %s", name, self.backend.name)
        self.passes += 1
        for trigger in triggers:
            self.metrics.reconciles.labels(trigger).inc()
        self.metrics.peers.labels("accepted").set(len(view.accepted))
        self.metrics.peers.labels("refused").set(len(view.refusals))
        self.metrics.routes.set(len(state.routes))
        elapsed = time.perf_counter() - started
        self.metrics.reconcile_seconds.observe(elapsed)
        self.metrics.reconcile_loop_seconds.observe(max(elapsed - self._awaited, 0.0))
        if not refused:
            self.retry_backoff.reset()
        if touched is None and not audited:
            # a full pass from scratch: the old view, the list and their garbage are gone
            # (an audit keeps the per-record results: little is freed)
            release_free_memory()
        return refused

    async def _on_worker(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` on the worker thread; the time counts as not on the loop."""
        started = time.perf_counter()
        try:
            return await self.worker.call(function, *args)
        finally:
            self._awaited += time.perf_counter() - started

    def _read_kernel(self, known: KernelState | None) -> tuple[RoutingContext, KernelState]:
        """On the kernel thread: prepare the backend's devices, read this node's
        networks and everything of plainnet's (``known`` itself if its routes are
        unchanged: :meth:`Kernel.read_state`)."""
        links = self.backend.prepare(self.node, self.kernel)
        local = tuple(self.kernel.local_networks(self._own_devices))
        context = RoutingContext(self.backend, local, links)
        previous = self.view.context if self.view is not None else None
        if previous == context:
            context = previous  # an unchanged context keeps the view
        devices = self.backend.entry_devices(links)
        state = self.kernel.read_state(devices, known if context is previous else None)
        self.events = EventFilter(
            links=frozenset(self._underlay_links(local)) | devices,
            cluster=tuple(self.cluster_cidrs),
            entry_devices=devices,
        )
        return context, state

    def _underlay_links(self, local: Iterable[LocalNetwork]) -> set[int]:
        """Interfaces of the node's own networks: the underlay. The pod bridge is not
        one; its ports coming and going is pod churn."""
        mine = node_networks(local, self.cluster_cidrs, self.own.subnets)
        return {network.ifindex for network in mine} | {self.node.uplink.ifindex}

    def _remove_leftovers(self) -> list[str]:
        """Devices of backends this node no longer runs, now that routes are off them."""
        return [name for other in self._others for name in other.remove(self.kernel)]

    def _incremental_view(
        self, context: RoutingContext, records: Mapping[str, Record], changed: set[str] | None
    ) -> tuple[PeerView | None, set[IPNetwork] | None]:
        """The current view brought up to date for ``changed`` and the destinations that
        may differ; (None, None) when it must be rebuilt."""
        view = self.view
        if (
            view is None
            or changed is None
            or view.context is not context
            or len(changed) > INCREMENTAL_LIMIT
        ):
            return None, None
        touched = view.update(records, changed) if changed else set()
        if touched is None:
            return None, None
        return view, touched

    def _rebuild(
        self,
        context: RoutingContext,
        records: Mapping[str, Record],
        previous: CarriedOver | None = None,
    ) -> PeerView:
        view = PeerView(self.own, self.cluster_cidrs, context, self.node_prefixes)
        view.rebuild(records, previous)
        return view

    @staticmethod
    def _full_plan(view: PeerView, state: KernelState) -> Plan:
        plan = plan_changes(view.desired, state)
        plan_entries(plan, view.entries, state.entries)
        return plan

    # --- reporting -----------------------------------------------------------------------

    def _report_refusals(self, refusals: Mapping[str, Refusal], keys: set[str] | None) -> None:
        """Log and count each refusal once (per record and detail): of the changed
        ``keys`` after an incremental update — O(changes) — or of all after a rebuild."""
        reported = self._reported
        if keys is None:
            keys = set(refusals) | set(reported)
        for key in keys:
            refusal = refusals.get(key)
            if refusal is None:
                reported.pop(key, None)
            elif reported.get(key) != refusal.detail:
                reported[key] = refusal.detail
                self.refusal_log.report(refusal)
                self.metrics.refused.labels(refusal.reason).inc()
        self.refusal_log.flush()

    def _count(self, plan: Plan) -> None:
        self.metrics.route_changes.labels("add").inc(len(plan.add_routes))
        self.metrics.route_changes.labels("replace").inc(len(plan.replace_routes))
        self.metrics.route_changes.labels("delete").inc(len(plan.delete_routes))
        changes = self.metrics.entry_changes
        changes.labels("neighbour", "set").inc(len(plan.set_neighbours))
        changes.labels("neighbour", "delete").inc(len(plan.delete_neighbours))
        changes.labels("fdb", "set").inc(len(plan.set_fdb))
        changes.labels("fdb", "delete").inc(len(plan.delete_fdb) + len(plan.reset_fdb))

    def _log_plan(self, plan: Plan, refusals: list[KernelRefusal]) -> None:
        for refusal in refusals[:DETAILED_LOG_LIMIT]:
            log.warning("kernel refused %s", refusal.message)
        if len(refusals) > DETAILED_LOG_LIMIT:
            log.warning("kernel refused %d more requests", len(refusals) - DETAILED_LOG_LIMIT)
        if plan.entry_changes:
            log.info("link-layer entries changed: %s", plan.entry_summary())
        if plan.route_changes > DETAILED_LOG_LIMIT:
            log.info("routes changed: %s", plan.summary())
            return
        refused = {r.subject for r in refusals if r.kind == "route"}
        for destination, _, route in plan.add_routes:
            if destination not in refused:
                log.info("route added: %s via %s (node %s)", destination, route.gateway, route.node)
        for destination, _, route in plan.replace_routes:
            log.info(
                "route re-pointed: %s via %s (node %s)", destination, route.gateway, route.node
            )
        for route in plan.delete_routes:
            log.info("route removed: %s (no valid peer record holds it)", route.destination)


def single_malloc_arena() -> None:
    """Let the worker thread allocate from the main thread's heap (a process-wide
    setting: the agent's entry point makes it before any thread starts). glibc gives a
    new thread an arena of its own, and the memory a 20,000-peer pass frees there stays
    resident next to the main heap's (measured: +8 MB at 20,000 peers). Two threads
    hardly contend for one arena's lock."""
    m_arena_max = -8  # malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, 1)


#: The cycle collector's first-generation threshold while the agent runs (CPython's
#: default is 700). A full pass allocates a few objects per peer and frees them
#: with reference counting; at the default, 65,536 peers set off hundreds of
#: collections that each walk every live record (measured: a 65,535-peer rebuild
#: 1.6-1.9 s at the default, 1.1-1.35 s at this setting). Cycles are still collected:
#: less often, and after every full pass (:func:`release_free_memory`).
COLLECTOR_THRESHOLD = (100_000, 50, 100)


def tune_cycle_collector() -> None:
    """Collect reference cycles less often (a process-wide setting, made once by the
    agent's entry point)."""
    gc.set_threshold(*COLLECTOR_THRESHOLD)


def release_free_memory() -> None:
    """Give memory freed after a full pass (the etcd list, parsed records, the old view)
    back to the system: glibc keeps freed heap otherwise, and a long-running agent's
    resident size would stay at its start-up peak."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
