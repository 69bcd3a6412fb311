"""The agent's loop with a fake datastore and a fake kernel: every failure path of the
reactor, no root. Each test would fail on the agent before the restructure (it died,
hung or waited hours)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from ipaddress import ip_address
from pathlib import Path

import pytest
from tests.helpers.fakes import FakeDatastore, FakeKernel, peer

from plainnet.agent.metrics import AgentMetrics
from plainnet.agent.reactor import Agent
from plainnet.agent.startup import AgentSettings
from plainnet.datastore.records import DatastoreError, HistoryCompacted
from plainnet.errors import PlainnetError


def settings(tmp_path: Path, **overrides) -> AgentSettings:
    values = {"node_name": "node1", "run_dir": tmp_path, "retry_seconds": 0.05}
    values.update(overrides)
    return AgentSettings(**values)


async def eventually(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(agent: Agent):
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def metric(agent: Agent, name: str, labels: dict | None = None) -> float:
    value = agent.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def make(tmp_path: Path, **overrides):
    store, kernel = FakeDatastore(), FakeKernel()
    agent = Agent(settings(tmp_path, **overrides), store, kernel, AgentMetrics())
    return agent, store, kernel


def test_deleting_this_nodes_own_record_puts_it_back(tmp_path):
    async def scenario():
        agent, store, kernel = make(tmp_path)
        store.records["k2"] = peer(2)
        async with running(agent) as task:
            await eventually(lambda: "10.244.2.0/24" in kernel.destinations, what="route")
            store.put(store.own.key)  # someone deletes this node's record
            await eventually(lambda: store.calls.get("restore") == 1, what="restore")
            await eventually(lambda: store.own.key in agent.observation.records)
            assert not task.done(), "the agent must survive its record's deletion"
            assert metric(agent, "plainnet_own_record_restores_total", {"reason": "deleted"}) == 1
            store.put(peer(3))  # and it still follows the datastore
            await eventually(lambda: "10.244.3.0/24" in kernel.destinations)

    asyncio.run(scenario())


def test_a_rewrite_of_this_nodes_own_record_is_put_back(tmp_path):
    async def scenario():
        agent, store, _ = make(tmp_path)
        async with running(agent):
            await eventually(lambda: agent.ready()[0], what="readiness")
            forged = dataclasses.replace(store.own, addresses=(ip_address("10.250.0.66"),))
            store.put(forged)
            await eventually(lambda: store.calls.get("restore") == 1, what="restore")
            await eventually(lambda: agent.observation.records[store.own.key] == store.own)
            assert metric(agent, "plainnet_own_record_restores_total", {"reason": "rewritten"}) == 1
            store.put(store.own)  # its own write, seen back: no alarm
            await asyncio.sleep(0.1)
            assert store.calls.get("restore") == 1

    asyncio.run(scenario())


def test_a_failing_relist_after_compaction_only_retries(tmp_path):
    async def scenario():
        agent, store, kernel = make(tmp_path)
        async with running(agent) as task:
            await eventually(lambda: agent.passes >= 1)
            store.records["k4"] = peer(4)  # written while the history is gone
            store.fail["list"] = 2  # the relist fails twice
            store.events.put_nowait(HistoryCompacted("gone"))
            await eventually(lambda: "10.244.4.0/24" in kernel.destinations, what="relist")
            assert store.calls["list"] >= 4  # start + two failures + the good one
            assert not task.done()

    asyncio.run(scenario())


def test_watch_errors_at_every_step_keep_routes_and_recover(tmp_path):
    async def scenario():
        agent, store, kernel = make(tmp_path)
        store.records["k2"] = peer(2)
        async with running(agent):
            await eventually(lambda: "10.244.2.0/24" in kernel.destinations)
            store.fail["watch"] = 3  # reconnecting fails three times
            store.events.put_nowait(DatastoreError("connection lost"))
            await eventually(lambda: store.calls["watch"] >= 5, what="watch retries")
            assert "10.244.2.0/24" in kernel.destinations, "routes stay while etcd is away"
            assert metric(agent, "plainnet_datastore_errors_total") >= 4
            store.put(peer(5))
            await eventually(lambda: "10.244.5.0/24" in kernel.destinations)

    asyncio.run(scenario())


def test_a_signal_during_start_up_stops_the_agent_at_once(tmp_path):
    async def scenario():
        agent, store, _ = make(tmp_path)
        store.fail["network_config"] = 10**9  # the datastore is not there
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await eventually(lambda: store.calls.get("network_config", 0) >= 2)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 2)
        assert time.monotonic() - started < 1
        assert store.calls["close"] == 1

    asyncio.run(scenario())


def test_a_failed_renewal_is_retried_with_backoff_not_a_period_later(tmp_path):
    async def scenario():
        agent, store, _ = make(tmp_path, renew_seconds=0.2)
        store.fail["renew"] = 2
        async with running(agent):
            await eventually(lambda: store.calls.get("renew", 0) >= 3, timeout=2, what="retry")
            assert metric(agent, "plainnet_lease_renewals_total", {"result": "failed"}) == 2
            assert metric(agent, "plainnet_lease_renewals_total", {"result": "ok"}) == 1

    asyncio.run(scenario())


def test_a_burst_of_changes_is_one_pass(tmp_path):
    async def scenario():
        agent, store, kernel = make(tmp_path)
        async with running(agent):
            await eventually(lambda: agent.passes >= 1)
            before, applies = agent.passes, kernel.applies
            for number in range(2, 102):  # 100 separate watch responses
                store.put(peer(number))
            await eventually(lambda: len(kernel.destinations) == 100, what="all routes")
            await asyncio.sleep(0.1)
            assert agent.passes - before == 1
            assert kernel.applies - applies == 1

    asyncio.run(scenario())


def test_kernel_refusals_back_off(tmp_path):
    async def scenario():
        agent, store, kernel = make(tmp_path)
        store.records["k2"] = peer(2)
        kernel.refuse = {peer(2).subnets[0]}
        async with running(agent):
            await asyncio.sleep(3.2)
            # a retry each second would be 4 or more; backoff (1 s, 2 s, ...) gives 2-3
            assert 2 <= kernel.applies <= 3, kernel.applies
            assert metric(agent, "plainnet_kernel_errors_total") == kernel.applies

    asyncio.run(scenario())


def test_a_loop_that_fails_unexpectedly_is_restarted(tmp_path):
    async def scenario():
        agent, store, kernel = make(tmp_path)
        async with running(agent) as task:
            await eventually(lambda: agent.passes >= 1)
            store.events.put_nowait(RuntimeError("a bug in the watch"))
            await eventually(lambda: store.calls["watch"] >= 2, what="restarted watch")
            store.put(peer(6))
            await eventually(lambda: "10.244.6.0/24" in kernel.destinations)
            assert not task.done()

    asyncio.run(scenario())


def test_no_pass_runs_before_the_first_list(tmp_path):
    """Invariant 5: an agent restarted while the datastore is down must not wipe the
    routes of the records it cannot read yet."""

    async def scenario():
        agent, store, kernel = make(tmp_path)
        store.fail["list"] = 10**9
        async with running(agent):
            await asyncio.sleep(0.5)
            assert kernel.applies == 0 and kernel.reads == 0

    asyncio.run(scenario())


def test_a_resync_reads_the_kernel_again(tmp_path):
    async def scenario():
        agent, _, kernel = make(tmp_path, resync_seconds=0.2)
        async with running(agent):
            await eventually(lambda: kernel.reads >= 3, timeout=3, what="resyncs")

    asyncio.run(scenario())


def test_a_resync_rebuilds_the_view_from_the_records(tmp_path):
    """A wrong entry an incremental update left in the view (a VTEP MAC re-pointed by a
    hostile record) used to survive every resync until a restart."""

    async def scenario():
        agent, store, kernel = make(tmp_path, resync_seconds=3600)
        store.records["k2"] = peer(2)
        async with running(agent):
            await eventually(lambda: "10.244.2.0/24" in kernel.destinations, what="route")
            store.put(peer(3))  # an incremental update
            await eventually(lambda: "10.244.3.0/24" in kernel.destinations, what="update")
            damaged = agent.reconciler.view
            assert damaged.updates == 1
            damaged.desired.clear()  # what a wrong update could leave behind
            agent.dirty.mark("resync")
            await eventually(lambda: agent.reconciler.view is not damaged, what="a rebuild")
            assert "10.244.2.0/24" in map(str, agent.reconciler.view.desired)
            assert "10.244.2.0/24" in kernel.destinations

    asyncio.run(scenario())


def test_an_idle_resync_neither_parses_nor_diffs_an_unchanged_kernel(tmp_path):
    """An idle resync cost 110-200 ms of CPU at 5,000 peers: a parse of every route, a
    rebuild of the view and a diff, all to find nothing. With the kernel's routes byte
    for byte what the last diff found right, and the view exactly what a rebuild gives,
    it does neither — and a route lost behind the agent's back still comes back."""

    async def scenario():
        agent, store, kernel = make(tmp_path, resync_seconds=0.05)
        store.records["k2"] = peer(2)
        store.records["k3"] = peer(3)
        async with running(agent):
            await eventually(lambda: len(kernel.destinations) == 2, what="routes")
            view = agent.reconciler.view
            await eventually(lambda: kernel.unparsed_reads >= 3, what="idle resyncs")
            assert agent.reconciler.view is view, "nothing changed: no rebuild"
            applies = kernel.applies
            lost = next(d for d in kernel.state.routes if str(d) == "10.244.3.0/24")
            del kernel.state.routes[lost]  # no netlink event: only a resync can see it
            await eventually(lambda: "10.244.3.0/24" in kernel.destinations, what="restored")
            assert kernel.applies == applies + 1
            store.put(peer(4))  # an update: the next resync audits the view again
            await eventually(lambda: agent.reconciler.view is not view, what="an audit")
            assert "10.244.4.0/24" in kernel.destinations

    asyncio.run(scenario())


def test_the_pod_bridge_is_never_taken_for_the_node_interface():
    """A restarted agent on a node with pods stopped with "cannot tell which address is
    this node's: interfaces cbr0, eth0 have addresses"."""
    from ipaddress import ip_address, ip_network

    from plainnet.agent.local_networks import LocalNetwork, node_networks
    from plainnet.agent.startup import pick_node_addresses

    eth0 = LocalNetwork(ip_network("10.250.0.0/24"), 2, "eth0", ip_address("10.250.0.5"))
    cbr0 = LocalNetwork(ip_network("10.244.3.0/24"), 7, "cbr0", ip_address("10.244.3.1"))
    cluster = (ip_network("10.244.0.0/16"),)
    assert pick_node_addresses(node_networks([eth0, cbr0], cluster)) == (eth0.address,)
    # a cluster CIDR drawn around the node network: the previous subnet tells them apart
    around = (ip_network("10.0.0.0/8"),)
    mine = (cbr0.network,)
    assert pick_node_addresses(node_networks([eth0, cbr0], around, mine)) == (eth0.address,)
    # two node interfaces: the Node's InternalIP (Kubernetes datastore) decides
    eth1 = LocalNetwork(ip_network("192.168.9.0/24"), 4, "eth1", ip_address("192.168.9.7"))
    with pytest.raises(PlainnetError, match="pass --node-ip"):
        pick_node_addresses([eth0, eth1])
    assert pick_node_addresses([eth0, eth1], (eth1.address,)) == (eth1.address,)


def test_alive_from_the_first_second_ready_only_with_a_datastore(tmp_path):
    async def scenario():
        agent, store, _ = make(tmp_path)
        store.fail["network_config"] = 3
        async with running(agent):
            await eventually(lambda: store.calls.get("network_config", 0) >= 1)
            assert agent.alive()[0] and not agent.ready()[0]
            await eventually(lambda: agent.ready()[0], what="ready")
            store.fail["watch"] = 10**9
            store.events.put_nowait(DatastoreError("gone"))
            await eventually(lambda: not agent.ready()[0], what="not ready")
            assert agent.alive()[0], "the datastore being away is no reason to restart"

    asyncio.run(scenario())


def test_a_stalled_datastore_is_reported_and_its_return_noticed(tmp_path, monkeypatch):
    """A frozen etcd (SIGSTOP: TCP open, no answer) fails no request and leaves a watch
    quiet: it went unnoticed for ~100 s while /readyz said ok."""
    monkeypatch.setattr("plainnet.agent.reactor.PROBE_SECONDS", 0.05)
    monkeypatch.setattr("plainnet.agent.reactor.PROBE_TIMEOUT_SECONDS", 0.2)

    async def scenario():
        agent, store, _ = make(tmp_path)
        async with running(agent):
            await eventually(lambda: agent.ready()[0], what="readiness")
            store.hang.add("ping")
            await eventually(lambda: not agent.ready()[0], 1, what="the stall to be seen")
            assert "not answering" in agent.ready()[1]
            assert agent.alive()[0]  # the routes stay; a liveness probe must not kill it
            assert metric(agent, "plainnet_datastore_up") == 0
            store.hang.discard("ping")
            await eventually(lambda: agent.ready()[0], 1, what="readiness again")
            assert metric(agent, "plainnet_datastore_up") == 1

    asyncio.run(scenario())


def test_refusals_are_logged_rate_limited_with_a_summary(caplog):
    from plainnet.agent.reconciler import RefusalLog
    from plainnet.agent.validation import Refusal

    now = [0.0]
    refusals = RefusalLog(burst=5, window=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="plainnet.agent"):
        for number in range(3000):  # a flood of separate hostile puts
            refusals.report(Refusal(f"k{number}", "evil", "outside-cluster", "subnet x"))
        now[0] = 11.0
        refusals.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6
    assert "refused 2995 more peer records" in lines[-1] and "outside-cluster: 2995" in lines[-1]


def test_lost_subnets_are_the_ones_held_before_and_not_now():
    from ipaddress import ip_network

    from plainnet.agent.startup import subnets_lost

    a, b, c = (ip_network(f"10.244.{i}.0/24") for i in (1, 2, 3))
    assert subnets_lost((a,), (), (b,)) == ((a,), (a,))
    assert subnets_lost((b,), (a,), (c,)) == ((b,), (b, a))
    assert subnets_lost((b,), (a,), (a,)) == ((b,), (b,))  # held again: no longer lost
