"""The agent's asyncio loop: level-triggered convergence of this node's routes.

Everything that can change what the kernel should hold only *marks the agent dirty*,
with the trigger's name: a datastore change, a netlink event (one of our routes or
nexthops deleted, a link or address changed), the periodic resync, the start. One
reconcile task then computes the complete desired state from all peer records and
applies the difference. Triggers that arrive while a pass runs are merged into the
next pass, so a burst of changes costs one pass, not one per change — and a restart
at any moment converges to the same state as never stopping.

The kernel view is cached between passes and updated with what each pass changed; it
is re-read whenever netlink reports that something of ours was removed, when the
kernel refused a request, and on every resync. The VXLAN device (vxlan and auto
backends) is checked and repaired on the same occasions, before the routes through it;
with host-gw, a VXLAN device left from an earlier backend is removed after the routes
have moved off it.

The data plane never depends on the control plane: if the datastore is unreachable
the agent keeps the last records it had (and so the routes), and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
import time
from dataclasses import dataclass, field, replace
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from plainnet.agent import ROUTE_PROTOCOL, netlink
from plainnet.agent.backends import vxlan
from plainnet.agent.kernel import KernelRoutes, enable_forwarding
from plainnet.agent.metrics import AgentMetrics, serve_http
from plainnet.agent.node_state import NodeState, read_node_state, write_node_state
from plainnet.agent.peer_view import PeerView
from plainnet.agent.reconcile import KernelState, apply_plan_to_state, plan_changes, plan_subset
from plainnet.agent.routing import LocalNetwork, Routing, on_link_network
from plainnet.backend_names import BACKENDS
from plainnet.datastore.records import (
    Datastore,
    DatastoreError,
    HistoryCompacted,
    NodeClaim,
    PeerRecord,
    Record,
)
from plainnet.errors import PlainnetError
from plainnet.ipam.types import IPAddress

log = logging.getLogger("plainnet.agent")

#: Changes listed one per log line up to this many; beyond, a summary line.
DETAILED_LOG_LIMIT = 20
#: Passes with more changed records than this are full passes (as cheap by then).
INCREMENTAL_LIMIT = 256
#: Longest wait between retries of an unreachable datastore.
MAX_BACKOFF_SECONDS = 5.0


@dataclass
class AgentSettings:
    node_name: str
    node_addresses: tuple[IPAddress, ...] = ()
    run_dir: Path = Path("/run/plainnet")
    resync_seconds: float = 60.0
    renew_seconds: float = 3600.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9158  # 0: no HTTP endpoint
    cni_server: bool = True  # answer the CNI plugin on @plainnet-cni
    retry_seconds: float = 1.0
    protocol: int = ROUTE_PROTOCOL


@dataclass
class _Dirty:
    """Why the next pass runs; the event wakes the reconcile task."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    triggers: set[str] = field(default_factory=set)

    def mark(self, trigger: str) -> None:
        self.triggers.add(trigger)
        self.event.set()

    async def take(self) -> set[str]:
        await self.event.wait()
        self.event.clear()
        triggers, self.triggers = self.triggers, set()
        return triggers


class Agent:
    def __init__(
        self, settings: AgentSettings, datastore: Datastore, metrics: AgentMetrics | None = None
    ) -> None:
        self.settings = settings
        self.datastore = datastore
        self.metrics = metrics or AgentMetrics()
        self.kernel = KernelRoutes(settings.protocol)
        self.records: dict[str, Record] = {}
        self.revision = 0
        self.own: PeerRecord | None = None
        self.cluster_cidrs: list[Any] = []
        self.backend = "host-gw"
        self._dirty: _Dirty | None = None
        self._kernel_state: KernelState | None = None
        self._local: list[LocalNetwork] | None = None
        #: How to reach peers, with the VXLAN device's ifindex; None: check the device.
        self._routing: Routing | None = None
        self._routing_base = Routing()
        self._device: vxlan.VxlanDeviceSpec | None = None  # the VXLAN device wanted
        self._overlay_state: vxlan.OverlayEntries | None = None  # the device's entries
        self._devices: Any = None  # a vxlan_device.DeviceWorker once a device is handled
        self._reported: set[tuple[str, str]] = set()
        self._view: PeerView | None = None
        #: Keys changed since the last pass; None: unknown, the next pass is a full one.
        self._changed_keys: set[str] | None = None
        self._last_pass_ok = 0.0
        self._last_error: str | None = None
        self.passes = 0

    # --- start-up ----------------------------------------------------------------------

    async def start(self) -> None:
        """Claim this node's subnet, publish it for CNI, read all peers. Waits for the
        datastore: a node that boots while etcd is away joins as soon as it is back."""
        backoff = self.settings.retry_seconds
        while True:
            try:
                await self._start_once()
                return
            except DatastoreError as exc:
                self.metrics.datastore_errors.inc()
                log.warning("%s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _start_once(self) -> None:
        config = await self.datastore.network_config()  # type: ignore[attr-defined]
        self.cluster_cidrs = list(config.cluster_cidrs)
        self.backend = config.backend
        if self.backend not in BACKENDS:
            raise PlainnetError(
                f"backend {self.backend!r} is not supported by this agent "
                f"(supported: {', '.join(BACKENDS)})"
            )
        local = self._local_networks()
        addresses = self.settings.node_addresses or _pick_node_addresses(local)
        uplink = on_link_network(addresses[0], local)
        if uplink is None:
            raise PlainnetError(
                f"node address {addresses[0]} is not on any interface of "
                f"this node; pass --node-ip with one of its addresses"
            )
        previous = read_node_state(self.settings.run_dir)
        underlay = addresses[0]
        mac = vxlan.derived_mac(underlay)
        base = self._routing_base = Routing(self.backend, config.vni, underlay.version)
        self.own = await self.datastore.claim(
            NodeClaim(
                node=self.settings.node_name,
                addresses=tuple(addresses),
                backend=base.record_type,
                # What flanneld's vxlan backend publishes, so its nodes can reach ours.
                backend_data={"VNI": config.vni, "VtepMAC": mac} if base.overlay else {},
                previous_subnets=previous.subnets if previous else (),
            )
        )
        mtu = self.kernel.interface_mtu(uplink.ifindex)
        if base.overlay:
            mtu = vxlan.device_mtu(mtu, underlay.version)
            self._device = vxlan.VxlanDeviceSpec(
                name=vxlan.DEVICE_NAME,
                vni=config.vni,
                port=config.port,
                local=underlay,
                uplink_ifindex=uplink.ifindex,
                mac=mac,
                mtu=mtu,
                addresses=tuple(ip_interface(vxlan.vtep_address(s)) for s in self.own.subnets),
            )
        state_file = write_node_state(
            self.settings.run_dir,
            NodeState(
                node=self.settings.node_name,
                cluster_cidrs=tuple(self.cluster_cidrs),
                subnets=self.own.subnets,
                mtu=mtu,  # for pods: with an overlay, what fits once encapsulated
                backend=self.backend,
            ),
        )
        log.info(
            "node %s owns %s (%s); wrote %s",
            self.own.node,
            ", ".join(map(str, self.own.subnets)),
            self.own.key,
            state_file,
        )
        enable_forwarding()
        snapshot = await self.datastore.list()
        self.records, self.revision = dict(snapshot.records), snapshot.revision

    # --- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._dirty = _Dirty()
        await self.start()
        self._dirty.mark("start")
        cni = None
        if self.settings.cni_server:
            from plainnet.cni.server import CniServer

            try:
                cni = CniServer(self.settings.run_dir).start()
            except OSError as exc:
                raise PlainnetError(
                    f"cannot serve CNI on @plainnet-cni ({exc.strerror}): is "
                    f"another plainnet agent running on this node?"
                ) from None
        server = None
        if self.settings.metrics_port:
            server = await serve_http(
                self.settings.metrics_host, self.settings.metrics_port, self.metrics, self.health
            )
        tasks = [
            asyncio.create_task(coro, name=name)
            for name, coro in (
                ("reconcile", self._reconcile_loop()),
                ("watch", self._watch_loop()),
                ("netlink", self._netlink_loop()),
                ("resync", self._resync_loop()),
                ("renew", self._renew_loop()),
            )
        ]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in [*tasks, stopping]:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            server.close()
        if cni is not None:
            cni.stop()
        await self.datastore.close()
        self.kernel.close()
        if self._devices is not None:
            self._devices.close()
        for task in done:
            if task is not stopping and task.exception():
                raise task.exception()  # type: ignore[misc]
        log.info("stopped; routes stay in place")

    def mark(self, trigger: str) -> None:
        if self._dirty is not None:
            self._dirty.mark(trigger)

    async def _reconcile_loop(self) -> None:
        assert self._dirty is not None
        while True:
            triggers = await self._dirty.take()
            try:
                self.reconcile(triggers)
            except Exception as exc:
                self._last_error = f"reconcile failed: {exc}"
                if isinstance(exc, PlainnetError):  # explained: one line, no traceback
                    log.error("%s; retrying in %.1fs", exc, self.settings.retry_seconds)
                else:
                    log.exception(
                        "reconcile failed; retrying in %.1fs", self.settings.retry_seconds
                    )
                self._forget_kernel()
                self._view = None  # a pass that failed half-way leaves no half-updated view
                await asyncio.sleep(self.settings.retry_seconds)
                self.mark("retry")

    def reconcile(self, triggers: set[str]) -> None:
        """One level-triggered pass: desired state from all records, diff, apply.

        When the only news is a few changed records, the view is updated for those
        alone (:meth:`PeerView.update` guarantees the same result as a rebuild, or
        declines) and only their routes are planned; everything else is a full pass."""
        assert self.own is not None
        started = time.perf_counter()
        if "resync" in triggers:
            self._forget_kernel()
        changed, self._changed_keys = self._changed_keys, set()
        local = self._local_networks()
        routing = self._current_routing()
        view, touched = self._view, None
        # The view depends on the records, this node's networks and the VXLAN device
        # only; it survives kernel events and resyncs, which re-read the kernel side.
        if (
            view is not None
            and changed is not None
            and view.local is local
            and view.routing == routing
            and len(changed) <= INCREMENTAL_LIMIT
        ):
            touched = view.update(self.records, changed) if changed else set()
        if touched is None:
            view = PeerView(self.own, self.cluster_cidrs, local, routing)
            view.rebuild(self.records)
            self._view = view
        assert view is not None
        if touched is None or changed:
            self._report_refusals(list(view.refusals.values()))
        fresh_kernel = self._kernel_state is None
        if fresh_kernel:
            self._kernel_state = self.kernel.read_state()
        assert self._kernel_state is not None
        if touched is None or fresh_kernel:
            plan = plan_changes(view.desired, self._kernel_state)
        else:
            plan = plan_subset(view.desired, self._kernel_state, touched, view.nexthop_refs)
        overlay = None
        if routing.overlay:
            entries_touched = view.touched_entries if touched is not None else None
            if self._overlay_state is None:
                self._overlay_state = self.kernel.read_overlay(routing.overlay_ifindex)
                entries_touched = None
            elif touched is not None and not changed:
                entries_touched = (set(), set())  # nothing changed since the last pass
            overlay = vxlan.plan_entries(view.entries, self._overlay_state, entries_touched)
        if plan or overlay:
            refused, failures = self.kernel.apply(plan, overlay, routing.overlay_ifindex)
            self._log_plan(plan, refused)
            apply_plan_to_state(plan, self._kernel_state, set(refused), self.settings.protocol)
            self.metrics.route_changes.labels("add").inc(len(plan.add_routes))
            self.metrics.route_changes.labels("replace").inc(len(plan.replace_routes))
            self.metrics.route_changes.labels("delete").inc(len(plan.delete_routes))
            if overlay:
                self._count_overlay(overlay)
                vxlan.apply_entries(overlay, self._overlay_state)
            if failures:
                self.metrics.kernel_errors.inc(failures)
                self._kernel_state = None
                self._overlay_state = None
                asyncio.get_running_loop().call_later(
                    self.settings.retry_seconds, self.mark, "retry"
                )
        if not routing.overlay and fresh_kernel:
            self._remove_leftover_device()
        self.passes += 1
        for trigger in triggers:
            self.metrics.reconciles.labels(trigger).inc()
        self.metrics.peers.labels("accepted").set(len(view.accepted))
        self.metrics.peers.labels("refused").set(len(view.refusals))
        self.metrics.routes.set(len(self._kernel_state.routes) if self._kernel_state else 0)
        self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        self._last_pass_ok = time.monotonic()
        self._last_error = None
        if touched is None:  # a full pass: the old view and its garbage are gone
            release_free_memory()

    def _forget_kernel(self) -> None:
        """Read everything kernel-side afresh in the next pass."""
        self._kernel_state = None
        self._local = None
        self._routing = None
        self._overlay_state = None

    def _current_routing(self) -> Routing:
        """The routing context, with the VXLAN device created or repaired if this is a
        pass that re-reads the kernel; an unchanged context is the same object."""
        if self._routing is None:
            ifindex = 0
            if self._device is not None:
                ifindex = self._device_call("ensure_device", self._device)
            current = replace(self._routing_base, overlay_ifindex=ifindex)
            previous = self._view.routing if self._view is not None else None
            self._routing = previous if previous == current else current
        return self._routing

    def _remove_leftover_device(self) -> None:
        """Remove a VXLAN device an earlier backend left, now that routes are off it (the
        cheap lean-netlink lookup first: pyroute2 is loaded only if there is one)."""
        if self.kernel.link_index(vxlan.DEVICE_NAME) and self._device_call(
            "remove_device", vxlan.DEVICE_NAME
        ):
            log.info("removed %s: this node now runs %s", vxlan.DEVICE_NAME, self.backend)

    def _device_call(self, function: str, *args: Any) -> Any:
        """Run :mod:`plainnet.agent.vxlan_device`'s ``function`` on its pyroute2 thread
        (imported on first use: pyroute2 costs a host-gw agent memory for nothing)."""
        from plainnet.agent import vxlan_device

        if self._devices is None:
            self._devices = vxlan_device.DeviceWorker()
        return self._devices.call(getattr(vxlan_device, function), *args)

    def _count_overlay(self, plan: vxlan.OverlayPlan) -> None:
        changes = self.metrics.overlay_changes
        changes.labels("neighbour", "set").inc(len(plan.set_neighbours))
        changes.labels("neighbour", "delete").inc(len(plan.delete_neighbours))
        changes.labels("fdb", "set").inc(len(plan.set_fdb))
        changes.labels("fdb", "delete").inc(len(plan.delete_fdb) + len(plan.reset_fdb))
        log.info("VXLAN entries changed: %s", plan.summary())

    def _local_networks(self) -> list[LocalNetwork]:
        """This node's networks; the same list object as long as they are unchanged, which
        tells the peer view that its validation still holds."""
        if self._local is None:
            current = self.kernel.local_networks()
            previous = self._view.local if self._view is not None else None
            self._local = previous if previous == current else current
        return self._local

    def _report_refusals(self, refusals: list[Any]) -> None:
        current = {(r.key, r.detail) for r in refusals}
        for refusal in refusals:
            if (refusal.key, refusal.detail) not in self._reported:
                log.warning("%s", refusal.log_line())
                self.metrics.refused.labels(refusal.reason).inc()
        self._reported = current

    def _log_plan(self, plan: Any, refused: dict[Any, Any]) -> None:
        changes = len(plan.add_routes) + len(plan.replace_routes) + len(plan.delete_routes)
        if changes > DETAILED_LOG_LIMIT:
            log.info("routes changed: %s", plan.summary())
            return
        for destination, _, route in plan.add_routes:
            if destination not in refused:
                log.info("route added: %s via %s (node %s)", destination, route.gateway, route.node)
        for destination, _, route in plan.replace_routes:
            log.info(
                "route re-pointed: %s via %s (node %s)", destination, route.gateway, route.node
            )
        for route in plan.delete_routes:
            log.info("route removed: %s (no valid peer record holds it)", route.destination)
        for destination, error in refused.items():
            log.warning("route %s not installed: %s", destination, error.strerror)

    async def _watch_loop(self) -> None:
        backoff = self.settings.retry_seconds
        while True:
            try:
                self.metrics.datastore_up.set(1)
                async for changes in self.datastore.watch(self.revision):
                    for change in changes:
                        if change.key is None:  # a bookmark: only the resume point moves
                            self.revision = max(self.revision, change.revision)
                            continue
                        if self._changed_keys is not None:
                            self._changed_keys.add(change.key)
                        if change.record is None:
                            self.records.pop(change.key, None)
                            if self.own is not None and change.key == self.own.key:
                                log.warning(
                                    "this node's record %s was deleted; putting it back", change.key
                                )
                                asyncio.get_running_loop().create_task(self._renew_once())
                        else:
                            self.records[change.key] = change.record
                        self.revision = max(self.revision, change.revision)
                    if any(change.key is not None for change in changes):
                        self.mark("datastore")
                    backoff = self.settings.retry_seconds
            except HistoryCompacted:
                log.warning(
                    "datastore history after revision %d was compacted; relisting", self.revision
                )
                await self._relist()
            except DatastoreError as exc:
                self.metrics.datastore_up.set(0)
                self.metrics.datastore_errors.inc()
                log.warning(
                    "%s; keeping the last %d records and routes, retrying in %.1fs",
                    exc,
                    len(self.records),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _relist(self) -> None:
        snapshot = await self.datastore.list()
        self.records, self.revision = dict(snapshot.records), snapshot.revision
        self._changed_keys = None
        self.mark("relist")

    async def _netlink_loop(self) -> None:
        sock = netlink.subscribe_events(neighbours=self._device is not None)
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
                        data, self.settings.protocol, self._overlay_ifindex()
                    )
                if relevant:
                    self._forget_kernel()
                    self.mark("kernel")
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    def _overlay_ifindex(self) -> int:
        return self._routing.overlay_ifindex if self._routing is not None else 0

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.mark("resync")

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            try:
                await self.datastore.renew()
            except DatastoreError as exc:
                log.warning("could not renew this node's lease: %s; retrying", exc)
                await asyncio.sleep(
                    min(self.settings.retry_seconds * 5, self.settings.renew_seconds)
                )

    def health(self) -> tuple[bool, str]:
        if self._last_error:
            return False, self._last_error
        if not self._last_pass_ok:
            return False, "starting"
        stale = time.monotonic() - self._last_pass_ok > 3 * self.settings.resync_seconds + 5
        if stale:
            return False, "no reconcile pass for too long"
        datastore = "up" if self.metrics.datastore_up._value.get() else "unreachable"
        return True, f"ok (datastore {datastore}, {self.passes} passes)"


def release_free_memory() -> None:
    """Give memory freed after a full pass (the etcd list, parsed records, the old view)
    back to the system: glibc keeps freed heap otherwise, and a long-running agent's
    resident size would stay at its start-up peak."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _pick_node_addresses(local: list[LocalNetwork]) -> tuple[IPAddress, ...]:
    """Without --node-ip: the addresses of the one interface that has global addresses."""
    interfaces = {network.ifname for network in local}
    if len(interfaces) != 1:
        raise PlainnetError(
            "cannot tell which address is this node's: interfaces "
            f"{', '.join(sorted(interfaces)) or '(none)'} have addresses; pass --node-ip"
        )
    addresses: dict[int, IPAddress] = {}
    for network in local:
        addresses.setdefault(network.address.version, network.address)
    return tuple(addresses[v] for v in sorted(addresses))


def run_agent(settings: AgentSettings, datastore: Datastore) -> None:
    """Run until SIGTERM or SIGINT."""
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per API request
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Agent(settings, datastore).run(stop)

    asyncio.run(main())
