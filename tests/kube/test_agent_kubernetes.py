"""The agent on the Kubernetes datastore, end to end in the lab: a real kube-apiserver
and kube-controller-manager (--allocate-node-cidrs) on the lab's etcd host, one agent
per node with the agent's read-only identity, pods made by the CNI plugin."""

import time

import pytest

from plainnet.agent.backends.vxlan import derived_mac
from plainnet.lab.reachability import probe_pods
from plainnet.node_state import read_node_state
from tests.helpers.advise import advise_on
from tests.helpers.cluster_checks import fdb

pytestmark = [pytest.mark.root, pytest.mark.kube]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def subnet(cluster, node):
    return str(read_node_state(cluster.run_dir(node)).subnets[0])


@pytest.fixture
def kube_cluster(cluster_factory, lab_name):
    return cluster_factory(
        lab_name, nodes=3, pods_per_node=1, datastore="kubernetes", cluster_cidrs=["10.244.0.0/16"]
    )


def test_pods_reach_each_other_with_subnets_from_kube_controller_manager(kube_cluster):
    probes = probe_pods(kube_cluster.pods)
    assert len(probes) == 6 and all(p.ok for p in probes)
    status, node = kube_cluster.kube.request("GET", "/api/v1/nodes/node1")
    assert status == 200
    assert node["spec"]["podCIDR"] == subnet(kube_cluster, "node1")  # assigned by the kcm
    for name in kube_cluster.nodes:
        assert len(kube_cluster.node_routes(name)) == 2
    # plainnet advise on a node of this one-segment cluster: host-gw, its facts
    advice = advise_on(kube_cluster, "node2")
    assert (advice["situation"], advice["backend"]) == ("one-segment", "host-gw")
    assert any("all 3 nodes on one segment" in f for f in advice["facts"])
    # plainnet doctor on the Kubernetes datastore: no false alarm, the podCIDR compared
    status, findings = kube_cluster.doctor("node2")
    assert status == 0 and all(f["status"] == "ok" for f in findings), findings
    assert "Node podCIDR" in next(f["fact"] for f in findings if f["check"] == "node-podcidr")


def test_the_agent_works_unchanged_with_subnets_from_plainnet_allocator(cluster_factory, lab_name):
    cluster = cluster_factory(
        lab_name,
        nodes=3,
        pods_per_node=1,
        datastore="kubernetes",
        allocator="plainnet",
        cluster_cidrs=["10.244.0.0/16"],
    )
    probes = probe_pods(cluster.pods)
    assert len(probes) == 6 and all(p.ok for p in probes)
    log = (cluster.directory / "allocator.log").read_text()
    assert "leading as" in log and log.count("assigned ") == 3


def test_node_deletion_and_an_api_server_restart_lose_no_change(kube_cluster):
    gone = subnet(kube_cluster, "node3")
    kube_cluster.stop_agent("node3")
    kube_cluster.kube.restart()  # every agent's watch breaks here and must resume
    status, _ = kube_cluster.kube.request("DELETE", "/api/v1/nodes/node3")
    assert status == 200
    for name in ("node1", "node2"):
        wait_until(
            lambda n=name: gone not in kube_cluster.node_routes(n),
            20,
            f"{name} to drop the deleted node's route",
        )
    kube_cluster.kube.create_node(
        "node3", [str(a) for a in kube_cluster.lab.host("node3").addresses()]
    )
    kube_cluster.start_agent("node3")
    wait_until(
        lambda: (
            read_node_state(kube_cluster.run_dir("node3")) is not None
            and len(kube_cluster.node_routes("node1")) == 2
        ),
        30,
        "node3 to rejoin with a new subnet from the controller manager",
    )


def test_vxlan_across_segments_needs_no_write_access(cluster_factory, lab_name):
    """Each VTEP MAC is derived from the node's address, so the read-only agent (its
    RBAC role can only list and watch Nodes) publishes nothing and still reaches the
    nodes behind the router."""
    cluster = cluster_factory(
        lab_name,
        nodes=3,
        pods_per_node=1,
        datastore="kubernetes",
        cluster_cidrs=["10.244.0.0/16"],
        topology="two-segments",
        backend="vxlan",
    )
    probes = probe_pods(cluster.pods)
    assert len(probes) == 6 and all(p.ok for p in probes)
    peers = [cluster.lab.host(n).ipv4 for n in ("node2", "node3")]
    assert fdb(cluster, "node1") == {derived_mac(a): {str(a)} for a in peers}
    status, node = cluster.kube.request("GET", "/api/v1/nodes/node1")
    assert status == 200 and not any(
        "flannel" in key or "plainnet" in key for key in node["metadata"].get("annotations", {})
    )
    # plainnet advise on node1: node3 shares its segment, node2 is behind the router
    advice = advise_on(cluster, "node1", "--security", "strict")
    assert (advice["situation"], advice["backend"]) == ("routed", "auto")
    assert advice["addons"] == ["network-policy"]
    assert any(
        "2 nodes on this node's segment" in f and "1 behind routers" in f for f in advice["facts"]
    )
    status, findings = cluster.doctor("node1", "--probe")
    assert status == 0 and all(f["status"] == "ok" for f in findings), findings


def test_a_deleted_own_node_is_waited_for_not_fatal(kube_cluster):
    """The agent cannot write Nodes: when its own is deleted it keeps running and
    routing, waits for the kubelet to register the Node again, and follows its new
    podCIDR (it used to die on the deletion)."""
    agent = kube_cluster.agents["node3"]
    status, _ = kube_cluster.kube.request("DELETE", "/api/v1/nodes/node3")
    assert status == 200
    wait_until(
        lambda: "waiting for it to be registered again" in kube_cluster.agent_log("node3"),
        10,
        "the agent to notice",
    )
    time.sleep(1)
    assert agent.poll() is None, kube_cluster.agent_log("node3")[-2000:]
    assert len(kube_cluster.node_routes("node3")) == 2, "it keeps routing to its peers"
    kube_cluster.kube.create_node(
        "node3", [str(a) for a in kube_cluster.lab.host("node3").addresses()]
    )
    wait_until(
        lambda: kube_cluster.agent_log("node3").count(" owns ") >= 2, 30, "the node's return"
    )
    status, node = kube_cluster.kube.request("GET", "/api/v1/nodes/node3")
    new = node["spec"]["podCIDR"]
    wait_until(lambda: subnet(kube_cluster, "node3") == new, 10, "subnet.json to follow")
    wait_until(lambda: new in kube_cluster.node_routes("node1"), 20, "node1 to route to it")
    assert agent.poll() is None
