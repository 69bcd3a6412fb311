"""The agent end to end: real etcd, one real agent process per node namespace, pods.

Kernel state is read back with iproute2 (an oracle independent of the agent's own
netlink code); connectivity is proven with packets.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from ipaddress import ip_network

import pytest
from tests.helpers.cluster_checks import (
    SUBNETS,
    agent_cleanup,
    etcd_tool,
    lease_key,
    metric,
    subnet_of,
    wait_until,
)

from plainnet.lab.reachability import probe_pods
from plainnet.node_state import read_node_state

pytestmark = pytest.mark.root


def test_every_pod_reaches_every_pod_dual_stack_without_nat(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=4, pods_per_node=2)
    probes = probe_pods(cluster.pods)
    assert len(probes) == 8 * 7 * 2
    failed = [p for p in probes if not p.ok]
    assert failed == []
    for probe in probes:  # the target saw the sender's own pod address
        source = next(p for p in cluster.pods if p.name == probe.source)
        assert probe.seen_from in {str(a) for a in source.addresses}
    for node in cluster.nodes:  # and the routes are host-gw routes, one per peer subnet
        assert len(cluster.node_routes(node, 4)) == 3
        assert len(cluster.node_routes(node, 6)) == 3


@pytest.mark.parametrize("cidr", ["10.244.0.0/16", "fd00:10:244::/56"])
def test_single_stack_clusters(cluster_factory, lab_name, cidr):
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=1, cluster_cidrs=[cidr])
    version = 6 if ":" in cidr else 4
    assert all(a.version == version for pod in cluster.pods for a in pod.addresses)
    probes = probe_pods(cluster.pods)
    assert len(probes) == 2 and all(p.ok for p in probes)
    assert len(cluster.node_routes("node1", version)) == 1
    assert cluster.node_routes("node1", 10 - version) == {}


def test_a_node_leaves_and_joins(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=1)
    node3_subnet = subnet_of(cluster, "node3")
    routes_before_stop = cluster.node_routes("node3")
    cluster.stop_agent("node3")
    assert cluster.node_routes("node3") == routes_before_stop, "stopping keeps routes"
    etcd_tool(cluster, "delete", lease_key(cluster, "node3"))
    for node in ("node1", "node2"):
        wait_until(
            lambda n=node: node3_subnet not in cluster.node_routes(n),
            5,
            what=f"{node} to drop the route of the deleted lease",
        )
    joined = time.monotonic()
    cluster.start_agent("node3")
    for node in ("node1", "node2"):
        wait_until(
            lambda n=node: node3_subnet in cluster.node_routes(n),
            10,
            what=f"{node} to route node3's subnet again",
        )
    assert time.monotonic() - joined < 10
    assert subnet_of(cluster, "node3") == node3_subnet  # it reclaimed its old subnet
    assert all(p.ok for p in probe_pods(cluster.pods))


def test_a_killed_nodes_lease_expires_and_its_routes_go(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=0, lease_ttl=5)
    gone = subnet_of(cluster, "node3")
    cluster.stop_agent("node3", kill=True)
    wait_until(
        lambda: (
            gone not in cluster.node_routes("node1") and gone not in cluster.node_routes("node2")
        ),
        15,
        what="the expired lease's routes to disappear",
    )
    assert subnet_of(cluster, "node2") in cluster.node_routes("node1")


def test_a_restarted_agent_removes_stale_routes_and_keeps_foreign_ones(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=0)
    stale, kept = subnet_of(cluster, "node3"), subnet_of(cluster, "node2")
    before = cluster.lab.run(
        "node1", ["ip", "route", "show", kept], capture_output=True, text=True
    ).stdout
    cluster.stop_agent("node1")
    cluster.stop_agent("node3")
    etcd_tool(cluster, "delete", lease_key(cluster, "node3"))
    cluster.lab.run(
        "node1", ["ip", "route", "add", "192.0.2.0/24", "via", "10.250.0.3"], check=True
    )
    assert stale in cluster.node_routes("node1")  # nobody removed it while node1 was down
    cluster.start_agent("node1")
    wait_until(
        lambda: stale not in cluster.node_routes("node1"), 10, what="the stale route to be removed"
    )
    foreign = cluster.lab.run(
        "node1", ["ip", "route", "show", "192.0.2.0/24"], capture_output=True, text=True
    ).stdout
    assert "via 10.250.0.3" in foreign, "a route plainnet did not create was touched"
    after = cluster.lab.run(
        "node1", ["ip", "route", "show", kept], capture_output=True, text=True
    ).stdout
    assert after == before  # same route, same nexthop object


def test_a_route_deleted_by_hand_is_back_within_a_second(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=0)
    victim = subnet_of(cluster, "node2")
    wait_until(lambda: victim in cluster.node_routes("node1"), 5, what="convergence")
    cluster.lab.run("node1", ["ip", "route", "del", victim], check=True)
    deleted = time.monotonic()
    wait_until(
        lambda: victim in cluster.node_routes("node1"), 1.0, 0.01, what="the route to be restored"
    )
    assert time.monotonic() - deleted < 1.0
    nexthop_gone = cluster.lab.run("node1", ["ip", "nexthop", "flush", "proto", "158"])
    assert nexthop_gone.returncode == 0
    wait_until(
        lambda: victim in cluster.node_routes("node1"),
        1.0,
        0.01,
        what="the route to be restored after its nexthop was flushed",
    )


HOSTILE = {
    "outside-cluster": ("192.168.5.0-24", {"PublicIP": "10.250.0.9"}, "outside the cluster CIDR"),
    "default-route": ("0.0.0.0-0", {"PublicIP": "10.250.0.9"}, "outside the cluster CIDR"),
    "local-network": ("10.250.0.0-24", {"PublicIP": "10.250.0.9"}, "overlaps network"),
    "not-on-link": ("10.0.200.0-24", {"PublicIP": "192.168.9.9"}, "use the vxlan or auto backend"),
    "family": (
        "10.0.201.0-24",
        {"PublicIP": "0.0.0.0", "PublicIPv6": "fd00::9"},
        "no IPv4 node address",
    ),
    "family-swapped": ("10.0.202.0-24", {"PublicIP": "fd00::9"}, "not an IPv4 address"),
    "unparseable": ("10.0.203.0-24", None, "cannot parse it"),
    "address": ("10.0.205.0-24", {"PublicIP": "10.0.9.9"}, "a pod's address"),
    "key-not-canonical": ("10.0.206.0-024", {"PublicIP": "10.250.0.9"}, "canonical form"),
    "public-ip-number": ("10.0.207.0-24", {"PublicIP": 167772425}, "not a string"),
    "backend": (
        "10.0.204.0-24",
        {"PublicIP": "10.250.0.9", "BackendType": "vxlan"},
        "uses backend 'vxlan'",
    ),
}


@pytest.mark.parametrize("case", [*sorted(HOSTILE), "prefix-length"])
def test_hostile_records_are_refused_and_never_routed(cluster_factory, lab_name, case):
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=0, cluster_cidrs=["10.0.0.0/8"])
    if case == "prefix-length":  # half of node2's subnet (it used to become a route)
        network = subnet_of(cluster, "node2").split("/")[0]
        name, value, words = f"{network}-25", {"PublicIP": "10.250.0.9"}, "node subnets are /24"
    else:
        name, value, words = HOSTILE[case]
    before = metric(cluster, "node1", "plainnet_peer_records_refused_total")
    text = "garbage" if value is None else json.dumps({"BackendType": "host-gw"} | value)
    etcd_tool(cluster, "put", SUBNETS + name, text)
    wait_until(lambda: words in cluster.agent_log("node1"), 5, what=f"a refusal naming {words!r}")
    refusal = next(line for line in cluster.agent_log("node1").splitlines() if words in line)
    assert name.split("-")[0] in refusal or case == "unparseable"
    assert metric(cluster, "node1", "plainnet_peer_records_refused_total") == before + 1
    routes = cluster.lab.run(
        "node1", ["ip", "route", "show", "proto", "158"], capture_output=True, text=True
    ).stdout
    destination = name.split("-")[0]
    assert destination not in routes.replace(subnet_of(cluster, "node2"), "")
    assert subnet_of(cluster, "node2") in cluster.node_routes("node1")  # the rest still works


def test_pods_keep_talking_while_etcd_is_down_and_a_new_node_joins_after(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=4, pods_per_node=1)
    late = subnet_of(cluster, "node4")
    cluster.stop_agent("node4")
    etcd_tool(cluster, "delete", lease_key(cluster, "node4"))
    wait_until(lambda: late not in cluster.node_routes("node1"), 5, what="node4 to leave")
    cluster.stop_etcd()
    cluster.start_agent("node4")  # a node that boots while etcd is away
    early_pods = [p for p in cluster.pods if p.node != "node4"]
    outage_started = time.monotonic()
    while time.monotonic() - outage_started < 16:  # past the 15 s stall detection
        assert all(p.ok for p in probe_pods(early_pods)), "the data plane needs no etcd"
        time.sleep(4)
    assert read_node_state(cluster.run_dir("node4")).subnets  # still the old file
    # started while etcd is away: alive (a liveness probe must not kill it), not ready
    assert http_status(cluster, "node4", "/healthz") == 200
    assert http_status(cluster, "node4", "/readyz") == 503
    cluster.etcd.start()
    for node in ("node1", "node2", "node3"):
        wait_until(
            lambda n=node: late in cluster.node_routes(n),
            15,
            what=f"{node} to learn node4's subnet after etcd returned",
        )
    assert all(p.ok for p in probe_pods(cluster.pods))
    wait_until(lambda: http_status(cluster, "node4", "/readyz") == 200, 10, what="readiness")


def test_a_frozen_etcd_is_reported_within_15_seconds(cluster_factory, lab_name):
    """etcd stopped with SIGSTOP keeps its TCP connections open: no request fails and
    the watch is only quiet. It went unnoticed for ~100 s while /readyz said ok."""
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=0)
    wait_until(lambda: http_status(cluster, "node1", "/readyz") == 200, 10, what="readiness")
    pid = cluster.etcd.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        wait_until(lambda: http_status(cluster, "node1", "/readyz") == 503, 15, what="the stall")
        noticed = time.monotonic() - frozen
        assert http_status(cluster, "node1", "/healthz") == 200  # not a reason to restart
        assert metric(cluster, "node1", "plainnet_datastore_up") == 0
        assert subnet_of(cluster, "node2") in cluster.node_routes("node1")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: http_status(cluster, "node1", "/readyz") == 200, 15, what="readiness")
    assert noticed < 15


def http_body(cluster, node, path):
    script = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    answer = urllib.request.urlopen('http://127.0.0.1:9158{path}', timeout=5)\n"
        "    print(answer.read().decode())\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.read().decode())\n"
    )
    return cluster.lab.run(
        node, [sys.executable, "-c", script], capture_output=True, text=True
    ).stdout


def http_status(cluster, node, path):
    script = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    print(urllib.request.urlopen('http://127.0.0.1:9158{path}', timeout=5).status)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
    )
    result = cluster.lab.run(node, [sys.executable, "-c", script], capture_output=True, text=True)
    return int(result.stdout.strip() or 0)


def test_a_burst_of_200_leases_is_one_reconcile_pass(cluster_factory, lab_name):
    """(200, not 1,000: every lease needs a node address of its own on the lab's /24.)"""
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=0, cluster_cidrs=["10.0.0.0/8"])
    time.sleep(0.5)
    passes = metric(cluster, "node1", 'plainnet_reconciles_total{trigger="datastore"}')
    etcd_tool(cluster, "put-leases", "200", "0", "10.250.0")
    wait_until(
        lambda: len(cluster.node_routes("node1")) == 201, 10, what="200 routes to be installed"
    )
    after = metric(cluster, "node1", 'plainnet_reconciles_total{trigger="datastore"}')
    assert after - passes == 1


def test_health_metrics_and_cleanup(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=1)

    def masquerade_table() -> int:
        listed = ["nft", "list", "table", "inet", "plainnet"]
        return cluster.lab.run("node1", listed, capture_output=True).returncode

    script = (
        "import urllib.request;print(urllib.request.urlopen("
        "'http://127.0.0.1:9158/healthz').read().decode())"
    )
    health = cluster.lab.run(
        "node1", [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert health.startswith("ok")
    assert metric(cluster, "node1", "plainnet_routes") == 2  # IPv4 and IPv6 to node2
    cluster.lab.run(
        "node1", ["ip", "route", "add", "192.0.2.0/24", "via", "10.250.0.3"], check=True
    )
    assert masquerade_table() == 0  # the pod's ADD installed it
    cluster.stop_agent("node1")
    cleaned = agent_cleanup(cluster, "node1")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "removed 2 routes and 2 nexthops" in cleaned.stdout
    assert "the nftables table inet plainnet" in cleaned.stdout
    assert masquerade_table() != 0, "uninstall leaves no nftables table behind"
    assert "the device cbr0" in cleaned.stdout
    assert cluster.lab.run("node1", ["ip", "link", "show", "cbr0"], capture_output=True).returncode
    assert not (cluster.run_dir("node1") / "ipam").exists()
    for args in (
        ["route", "show", "proto", "158"],
        ["-6", "route", "show", "proto", "158"],
        ["nexthop", "show", "proto", "158"],
    ):
        assert (
            cluster.lab.run("node1", ["ip", *args], capture_output=True, text=True).stdout.strip()
            == ""
        )
    assert (
        "192.0.2.0/24"
        in cluster.lab.run("node1", ["ip", "route"], capture_output=True, text=True).stdout
    )
    assert not (cluster.run_dir("node1") / "subnet.json").exists()


def test_ip_forwarding_is_enabled_on_nodes(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=1, pods_per_node=0)
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        value = cluster.lab.run(
            "node1", ["sysctl", "-n", key], capture_output=True, text=True
        ).stdout.strip()
        assert value == "1"
    assert subprocess.run(
        ["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True, text=True
    ).stdout.strip() in ("0", "1")  # the machine's own: untouched


def test_a_node_with_a_flannel_lease_and_flannel_routes_interoperates(cluster_factory, lab_name):
    """flanneld itself is not packaged for Debian 12 and cannot be fetched here, so node3
    plays a Flannel host-gw node: its lease is the exact JSON flanneld writes (no
    plainnet field, PublicIPv6 null, key without node name) and its routes are the plain
    ``subnet via node`` routes flanneld's host-gw backend adds (protocol boot)."""
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=1, cluster_cidrs=["10.244.0.0/16"])
    flannel_subnet = subnet_of(cluster, "node3")
    cluster.stop_agent("node3")
    etcd_tool(cluster, "delete", lease_key(cluster, "node3"))
    wait_until(lambda: flannel_subnet not in cluster.node_routes("node1"), 5, what="node3 gone")
    assert agent_cleanup(cluster, "node3", keep_pods=True).returncode == 0
    node3_ip = str(cluster.lab.host("node3").ipv4)
    key = SUBNETS + flannel_subnet.replace("/", "-")
    etcd_tool(
        cluster,
        "put",
        key,
        json.dumps({"PublicIP": node3_ip, "PublicIPv6": None, "BackendType": "host-gw"}),
    )
    for node in ("node1", "node2"):  # flanneld adds these on node3 from plainnet's leases
        subnet, gateway = subnet_of(cluster, node), str(cluster.lab.host(node).ipv4)
        cluster.lab.run(
            "node3", ["ip", "route", "add", subnet, "via", gateway, "proto", "boot"], check=True
        )
    for node in ("node1", "node2"):
        wait_until(
            lambda n=node: cluster.node_routes(n).get(flannel_subnet) == node3_ip,
            5,
            what=f"{node} to route the Flannel node's subnet",
        )
    probes = probe_pods(cluster.pods)
    assert probes and all(p.ok for p in probes)


def test_deleting_a_nodes_own_record_puts_it_back(cluster_factory, lab_name):
    """The agent used to die here (an AttributeError in the watch handler)."""
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=1)
    key = lease_key(cluster, "node2")
    subnet = subnet_of(cluster, "node2")
    etcd_tool(cluster, "delete", key)
    wait_until(lambda: "putting it back" in cluster.agent_log("node2"), 10, what="restore")
    wait_until(lambda: etcd_tool(cluster, "get", key).strip() != "", 10, what="record back")
    assert cluster.agents["node2"].poll() is None, cluster.agent_log("node2")[-2000:]
    for node in ("node1", "node3"):
        wait_until(lambda n=node: subnet in cluster.node_routes(n), 10, what=f"{node}'s route back")
    assert metric(cluster, "node2", 'plainnet_own_record_restores_total{reason="deleted"}') == 1
    assert all(p.ok for p in probe_pods(cluster.pods))


def test_a_rewrite_of_a_nodes_own_record_is_undone(cluster_factory, lab_name):
    """Someone rewrites node2's lease: another PublicIP, detached from its etcd lease.
    It went unnoticed: node1 routed node2's pods to the forged address for good."""
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=1, lease_ttl=5)
    key = lease_key(cluster, "node2")
    subnet = subnet_of(cluster, "node2")
    honest = cluster.node_routes("node1")[subnet]
    forged = json.loads(etcd_tool(cluster, "get", key))
    forged["PublicIP"] = "10.250.0.99"
    etcd_tool(cluster, "put", key, json.dumps(forged))  # no lease: it would never expire
    wait_until(
        lambda: json.loads(etcd_tool(cluster, "get", key))["PublicIP"] == honest,
        10,
        what="node2 to put its record back",
    )
    wait_until(lambda: cluster.node_routes("node1").get(subnet) == honest, 10, what="the route")
    assert "rewritten by someone else" in cluster.agent_log("node2")
    assert metric(cluster, "node2", 'plainnet_own_record_restores_total{reason="rewritten"}') == 1
    assert all(p.ok for p in probe_pods(cluster.pods))
    cluster.stop_agent("node2", kill=True)  # the record is on node2's lease again:
    wait_until(lambda: subnet not in cluster.node_routes("node1"), 30, what="lease expiry")


@contextlib.contextmanager
def paused_past_expiry(cluster, node, key):
    """``node``'s agent stopped (SIGSTOP) until its record ``key`` has expired, and
    for the ``with`` body; resumed after."""
    agent = cluster.agents[node]
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: etcd_tool(cluster, "get", key).strip() == "", 15, what="expiry")
        yield
    finally:
        os.kill(agent.pid, signal.SIGCONT)


def test_a_node_resumed_after_its_lease_expired_puts_its_record_back(cluster_factory, lab_name):
    """Paused past its TTL, node2's record expires; no one may take the subnet for one
    more TTL (its hold), so node2 resumes into the same subnet and routes return."""
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=1, lease_ttl=5)
    key, subnet = lease_key(cluster, "node2"), subnet_of(cluster, "node2")
    with paused_past_expiry(cluster, "node2", key):
        wait_until(lambda: subnet not in cluster.node_routes("node1"), 10, what="route gone")
    wait_until(lambda: etcd_tool(cluster, "get", key).strip() != "", 15, what="record back")
    wait_until(lambda: subnet in cluster.node_routes("node1"), 10, what="route back")
    assert "lost its subnet" not in cluster.agent_log("node2")
    assert all(p.ok for p in probe_pods(cluster.pods))


def test_a_node_resumed_after_its_subnet_was_taken_claims_again_loudly(cluster_factory, lab_name):
    """node2 is paused past its lease TTL; meanwhile another node (here a Flannel node,
    which knows nothing of plainnet's holds) takes node2's subnet. Both used to hold
    pods in one subnet, silently."""
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=1, lease_ttl=5)
    key, lost = lease_key(cluster, "node2"), subnet_of(cluster, "node2")
    with paused_past_expiry(cluster, "node2", key):
        taker = {"PublicIP": "10.250.0.99", "BackendType": "host-gw"}
        etcd_tool(cluster, "put", key, json.dumps(taker))
    wait_until(lambda: "lost its subnet" in cluster.agent_log("node2"), 15, what="the loss")

    # the loss is logged just before the new facts are written: wait for the write
    def written() -> bool:
        state = read_node_state(cluster.run_dir("node2"))
        return state is not None and lost not in {str(s) for s in state.subnets}

    wait_until(written, 10, what="subnet.json without the lost subnet")
    state = cluster.wait_for_node_state("node2", time.monotonic() + 10)
    assert lost in {str(s) for s in state.lost_subnets}
    assert metric(cluster, "node2", "plainnet_subnets_lost_total") == len(state.lost_subnets) == 2
    new = str(next(s for s in state.subnets if s.version == 4))
    wait_until(lambda: new in cluster.node_routes("node1"), 10, what="node2's new subnet routed")
    # node2's pod still has an address from the lost subnet: reported, node not ready
    stranded = next(p for p in cluster.pods if p.node == "node2")
    assert http_status(cluster, "node2", "/readyz") == 503
    assert "lost to another node" in http_body(cluster, "node2", "/readyz")
    cluster.delete_pod(stranded)
    wait_until(lambda: http_status(cluster, "node2", "/readyz") == 200, 10, what="readiness")
    fresh = cluster.add_pod("node2", "fresh")  # from the new subnet only
    assert all(a in ip_network(new) for a in fresh.addresses if a.version == 4)
    bridge = cluster.lab.run(
        "node2", ["ip", "-4", "addr", "show", "cbr0"], capture_output=True, text=True
    ).stdout
    assert lost.split("/")[0].rsplit(".", 1)[0] + "." not in bridge  # the lost gateway is gone


def test_pod_churn_costs_no_reconcile_pass(cluster_factory, lab_name):
    """Every pod's veth used to make the next pass re-read the whole kernel."""
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=1)
    name = 'plainnet_reconciles_total{trigger="kernel"}'
    before = metric(cluster, "node1", name)
    for number in range(20):  # what pods coming and going do to the node's links
        veth = f"pnchurn{number}"
        cluster.lab.run(
            "node1",
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p"],
            check=True,
        )
        cluster.lab.run("node1", ["ip", "link", "set", veth, "master", "cbr0", "up"], check=True)
    for number in range(20):
        cluster.lab.run("node1", ["ip", "link", "del", f"pnchurn{number}"], check=True)
    time.sleep(1)
    assert metric(cluster, "node1", name) == before
    # while the underlay still counts: a route of ours deleted by hand comes back
    subnet = subnet_of(cluster, "node2")
    cluster.lab.run("node1", ["ip", "route", "del", subnet], check=True)
    wait_until(lambda: subnet in cluster.node_routes("node1"), 5, what="route back")
    assert metric(cluster, "node1", name) > before


def test_an_honest_record_after_a_flood_of_hostile_ones_is_routed_at_once(
    cluster_factory, lab_name
):
    """3,000 separate hostile puts used to delay the next honest route by 1.7-3 s and
    write a log line each."""
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=0)
    log_before = len(cluster.agent_log("node1"))
    etcd_tool(cluster, "flood", "3000")
    honest = "10.244.250.0"
    value = json.dumps({"PublicIP": "10.250.0.9", "BackendType": "host-gw"})
    etcd_tool(cluster, "put", SUBNETS + f"{honest}-24", value)
    written = time.monotonic()
    wait_until(lambda: f"{honest}/24" in cluster.node_routes("node1"), 5, 0.01, what="route")
    assert time.monotonic() - written < 0.5 + 0.3  # + the test's own ip/etcd_tool start
    wait_until(
        lambda: metric(cluster, "node1", "plainnet_peer_records_refused_total") >= 3000,
        10,
        what="every refusal counted",
    )
    flood_log = cluster.agent_log("node1")[log_before:]
    assert flood_log.count("refused peer record") <= 20
    assert len(flood_log) < 20_000
