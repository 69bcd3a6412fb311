"""The agent's reactor: signals, tasks, retries and a clean shutdown.

Everything that can change what the kernel should hold only *marks the agent dirty*,
with the trigger's name: a datastore change, a relevant netlink event, the periodic
resync, a retry. One reconcile task runs a pass for all triggers gathered meanwhile,
so a burst of changes costs one pass — and a restart at any moment converges to the
same state as never stopping.

The tasks, each a loop that only cancellation ends:

- **start-up** (:mod:`.startup`), retried with backoff while the datastore is away;
  a signal during start-up ends it at once;
- **observation** (:mod:`.observation`): list and watch the records;
- **reconcile** (:mod:`.reconciler`): one pass at a time;
- **netlink**: kernel notifications, filtered to those that matter;
- **resync**: a full pass (fresh kernel read) every ``resync_seconds``;
- **renew**: keep this node's lease alive; a failed renewal is retried with backoff,
  well before the TTL runs out;
- **guard**: this node's own record deleted, gone or rewritten — put it back (etcd),
  or wait for it to return (Kubernetes);
- **probe**: a cheap read of the datastore every :data:`PROBE_SECONDS`, bounded by
  :data:`PROBE_TIMEOUT_SECONDS`: a frozen etcd (process stopped, TCP open) fails no
  request by itself, and a watch on it is just quiet; the probe makes the agent report
  it (``/readyz``, ``plainnet_datastore_up``) within ten seconds;
- **lag**: measures how late the loop runs timers (``plainnet_event_loop_lag_seconds``).

A loop that fails unexpectedly (a bug) is logged with its traceback and started again
after a backoff: nothing a peer writes, and no failure of the datastore or the kernel,
stops the agent. The data plane never depends on the control plane: with the
datastore unreachable, the agent keeps the last records it had (and so the routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from plainnet.agent import netlink
from plainnet.agent.backends import all_device_names
from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.metrics import AgentMetrics
from plainnet.agent.observation import Observation
from plainnet.agent.reconciler import Kernel, KernelWorker, Reconciler
from plainnet.agent.startup import AgentSettings, NodeContext, start_node, subnets_lost
from plainnet.datastore.records import Datastore, DatastoreError, SubnetLost
from plainnet.errors import PlainnetError
from plainnet.node_state import NodeState
from plainnet.retry import Backoff, supervise

log = logging.getLogger("plainnet.agent")

#: Longest wait between retries of an unreachable datastore.
MAX_BACKOFF_SECONDS = 5.0
#: How often the datastore is probed, and how long an answer may take.
PROBE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5.0
#: How often the lag monitor's timer is due.
LAG_TICK_SECONDS = 0.25


@dataclass
class Dirty:
    """Why the next pass runs; the event wakes the reconcile task."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    triggers: set[str] = field(default_factory=set)

    def mark(self, trigger: str) -> None:
        self.triggers.add(trigger)
        self.event.set()

    async def take(self) -> set[str]:
        await self.event.wait()
        return self.take_now()

    def take_now(self) -> set[str]:
        self.event.clear()
        triggers, self.triggers = self.triggers, set()
        return triggers


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        datastore: Datastore,
        kernel: Kernel,
        metrics: AgentMetrics | None = None,
        publish: Callable[[NodeState], None] | None = None,
    ) -> None:
        """``publish``: hands this node's facts to the CNI side (and writes them for
        restarts); called after the claim, and again should the subnet change."""
        self.settings = settings
        self.datastore = datastore
        self.kernel = kernel
        self.metrics = metrics or AgentMetrics()
        self.publish = publish or (lambda state: None)
        self.dirty = Dirty()
        self.worker = KernelWorker()
        retry = settings.retry_seconds
        self.observation = Observation(
            datastore, self.metrics, self.dirty.mark, Backoff(retry, MAX_BACKOFF_SECONDS)
        )
        self.node: NodeContext | None = None
        self.reconciler: Reconciler | None = None
        self._own_trouble = asyncio.Event()
        self._own_trouble_seen: set[str] = set()
        self.observation.on_own_trouble = self._own_record_in_trouble
        self._last_pass_ok = 0.0
        self._last_error: str | None = None
        self._datastore_answers = True

    @property
    def passes(self) -> int:
        return self.reconciler.passes if self.reconciler else 0

    # --- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start up and run until ``stop`` is set; start-up itself is cancellable."""
        try:
            starting = asyncio.create_task(self._start(), name="start-up")
            stopping = asyncio.create_task(stop.wait(), name="stop")
            await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                log.info("stopped during start-up")
                return
            stopping.cancel()
            starting.result()  # a PlainnetError: the configuration cannot work
            await self._run_loops(stop)
            log.info("stopped; routes stay in place")
        finally:
            await self._close()

    async def _run_loops(self, stop: asyncio.Event) -> None:
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "reconcile": self._reconcile_loop,
            "observation": self.observation.run,
            "netlink": self._netlink_loop,
            "resync": self._resync_loop,
            "renew": self._renew_loop,
            "guard": self._guard_loop,
            "probe": self._probe_loop,
            "lag": self._lag_loop,
        }
        tasks = [
            asyncio.create_task(self._supervised(name, loop), name=name)
            for name, loop in loops.items()
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` for ever: one that fails (a bug) is logged and started again."""

        def failed(delay: float) -> None:
            log.exception("the %s loop failed; restarting it in %.1fs", name, delay)
            self._last_error = f"{name} loop failed"

        await supervise(loop, Backoff(self.settings.retry_seconds, 30.0), failed)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.datastore.close()
        self.worker.close()
        self.kernel.close()

    # --- start-up ------------------------------------------------------------------------

    async def _start(self) -> None:
        """Claim this node's subnet, publish it, read all peers. Waits for the datastore:
        a node that boots while etcd is away joins as soon as it is back."""

        async def attempt() -> None:
            local, mtus = await self.worker.call(self._read_interfaces)
            node = await start_node(self.settings, self.datastore, local, mtus)
            self._adopt(node)
            versions = {subnet.version for subnet in node.own.subnets}
            for problem in await self.worker.call(self.kernel.enable_forwarding, versions):
                log.error("%s", problem)
            self.observation.own_key = node.own.key
            await self.observation.relist(self.datastore.claim_snapshot())

        def failed(exc: BaseException, delay: float) -> None:
            self.metrics.datastore_errors.inc()
            log.warning("%s; retrying in %.1fs", exc, delay)

        await Backoff(self.settings.retry_seconds, MAX_BACKOFF_SECONDS).retry(
            attempt, DatastoreError, failed
        )

    def _read_interfaces(self) -> tuple[list[LocalNetwork], dict[int, int]]:
        """On the kernel thread: this node's networks and their interfaces' MTUs."""
        local = self.kernel.local_networks(all_device_names())
        return local, {n.ifindex: self.kernel.interface_mtu(n.ifindex) for n in local}

    def _adopt(self, node: NodeContext) -> None:
        """Make ``node`` this agent's context: publish it and (re)build the reconciler.
        A subnet this node held and no longer holds (another node took it while this
        one was paused past its lease) is *lost*: said loudly, counted, and published
        with the node's facts, so the CNI side hands out nothing from it, frees what
        its pods still hold and reports them — until they are gone, the node is not
        ready."""
        previous = self.node
        if previous is not None and previous.own.subnets != node.own.subnets:
            newly, lost = subnets_lost(
                previous.own.subnets, previous.lost_subnets, node.own.subnets
            )
            node = replace(node, lost_subnets=lost)
            self.metrics.subnets_lost.inc(len(newly))
            log.error(
                "this node lost its subnet %s to another node (its lease had expired) and "
                "now owns %s: pods with addresses from the lost subnet must be recreated",
                ", ".join(map(str, newly)),
                ", ".join(map(str, node.own.subnets)),
            )
        self.node = node
        self.publish(node.state)
        log.info(
            "node %s owns %s (%s)",
            node.own.node,
            ", ".join(map(str, node.own.subnets)),
            node.own.key,
        )
        if self.reconciler is None:
            self.reconciler = Reconciler(
                node.identity,
                node.own,
                node.backend,
                node.cluster_cidrs,
                self.kernel,
                self.worker,
                self.metrics,
                self.settings.protocol,
                node.node_prefixes,
            )
            self.reconciler.wake = self.dirty.mark
        else:
            self.reconciler.adopt(node.own, node.identity)
        self.dirty.mark("start")

    # --- the loops -----------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        assert self.reconciler is not None
        reconciler = self.reconciler
        observation = self.observation
        while True:
            triggers = await self.dirty.take()
            try:
                refused = await reconciler.run_pass(
                    triggers, observation.take_changed, observation.records
                )
            except Exception as exc:
                reconciler.forget()
                delay = reconciler.retry_backoff.delay()
                self._last_error = f"reconcile failed: {exc}"
                if isinstance(exc, PlainnetError):  # explained: one line, no traceback
                    log.error("%s; retrying in %.1fs", exc, delay)
                else:
                    log.exception("reconcile failed; retrying in %.1fs", delay)
                self._retry_later(delay)
                continue
            self._last_pass_ok = time.monotonic()
            self._last_error = None
            if refused:
                self._retry_later(reconciler.retry_backoff.delay())

    def _retry_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.dirty.mark, "retry")

    async def _netlink_loop(self) -> None:
        assert self.reconciler is not None
        reconciler = self.reconciler
        sock = self.kernel.event_socket()
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(sock.fileno(), readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                relevant = False
                while True:
                    try:
                        data = sock.recv(netlink.RECV_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:  # ENOBUFS: events were lost; assume the worst
                        relevant = True
                        continue
                    relevant = relevant or netlink.event_needs_reconcile(
                        data, self.settings.protocol, reconciler.events
                    )
                if relevant:
                    reconciler.snapshot.invalidate()
                    self.dirty.mark("kernel")
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.dirty.mark("resync")

    async def _renew_loop(self) -> None:
        """Renew every ``renew_seconds``; a failure is retried with backoff capped far
        below the interval, so many tries fit before the TTL runs out."""
        renew = self.settings.renew_seconds
        backoff = Backoff(self.settings.retry_seconds, max(min(30.0, renew / 10), 0.1))

        def failed(exc: BaseException, delay: float) -> None:
            self.metrics.lease_renewals.labels("failed").inc()
            log.warning("could not renew this node's lease: %s; retrying in %.1fs", exc, delay)

        while True:
            await asyncio.sleep(renew)
            try:
                await backoff.retry(self.datastore.renew, DatastoreError, failed, until=SubnetLost)
            except SubnetLost as exc:
                log.error("%s", exc)
                self._own_record_in_trouble("lost")
                continue
            self.metrics.lease_renewals.labels("ok").inc()

    def _own_record_in_trouble(self, what: str) -> None:
        self._own_trouble_seen.add(what)
        self._own_trouble.set()

    async def _guard_loop(self) -> None:
        """Put this node's record back whenever it goes missing or is rewritten."""
        backoff = Backoff(self.settings.retry_seconds, MAX_BACKOFF_SECONDS)

        def failed(exc: BaseException, delay: float) -> None:
            log.warning("could not put this node's record back: %s; retrying in %.1fs", exc, delay)

        while True:
            await self._own_trouble.wait()
            self._own_trouble.clear()
            seen, self._own_trouble_seen = self._own_trouble_seen, set()
            assert self.node is not None
            for what in sorted(seen):
                log.warning(
                    "this node's record %s was %s by someone else; putting it back",
                    self.node.own.key,
                    what,
                )
                self.metrics.own_record_restores.labels(what).inc()
            own = await backoff.retry(self.datastore.restore, DatastoreError, failed)
            if own != self.node.own:
                self._adopt(self.node.with_own(own))
                self.observation.own_key = own.key

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                await asyncio.wait_for(self.datastore.ping(), PROBE_TIMEOUT_SECONDS)
            except (DatastoreError, TimeoutError) as exc:
                if self._datastore_answers:
                    log.warning(
                        "the datastore does not answer (%s); keeping the last records and routes",
                        str(exc) or f"no answer within {PROBE_TIMEOUT_SECONDS:g}s",
                    )
                    self.metrics.datastore_errors.inc()
                self._datastore_answers = False
                self.metrics.datastore_up.set(0)
                continue
            if not self._datastore_answers:
                log.info("the datastore answers again")
            self._datastore_answers = True
            if self.observation.watching:
                self.metrics.datastore_up.set(1)

    async def _lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_TICK_SECONDS
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.metrics.loop_lag.observe(max(loop.time() - due, 0.0))

    # --- health --------------------------------------------------------------------------

    def alive(self) -> tuple[bool, str]:
        """Liveness: the loop answers (this runs on it) and passes are not stuck. While
        starting or with the datastore away the agent is alive — it keeps the routes."""
        if self._last_pass_ok:
            stale = time.monotonic() - self._last_pass_ok > 3 * self.settings.resync_seconds + 5
            if stale and self._last_error:
                return False, f"no successful pass for too long: {self._last_error}"
        return True, f"ok ({self.phase()})"

    def ready(self) -> tuple[bool, str]:
        """Readiness: the node has its subnet, the datastore is reachable and the last
        pass succeeded."""
        if self.node is None or not self._last_pass_ok:
            return False, self.phase()
        if self._last_error:
            return False, self._last_error
        if not self._datastore_answers:
            return False, "datastore not answering (stopped, overloaded or cut off)"
        if not self.metrics.datastore_up._value.get():
            return False, "datastore unreachable"
        return True, f"ok ({self.passes} passes)"

    def phase(self) -> str:
        if self.node is None:
            return "starting: waiting for the datastore and this node's subnet"
        if not self._last_pass_ok:
            return "starting: first pass"
        datastore = "up" if self.metrics.datastore_up._value.get() else "unreachable"
        return f"datastore {datastore}, {self.passes} passes"


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` in a new event loop; SIGTERM and SIGINT set ``stop``. The
    handlers are installed before anything else runs, so a signal during start-up —
    while waiting for a datastore that is not there — ends the process at once."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())
