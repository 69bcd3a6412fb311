"""``plainnet doctor`` on real labs: no false alarm on a healthy one, and each fault
injected alone FAILs exactly its check — and the fix doctor prints, run on the node,
makes the node whole again (doctor clean, every pod reaching every other)."""

import json
import sys
import time

import pytest

from plainnet.agent.backends.vxlan import DEVICE_NAME
from plainnet.ipam.file_store import FilePodAddressStore, store_directory
from plainnet.ipam.pod_addresses import Owner
from plainnet.lab.reachability import probe_pods
from plainnet.node_state import read_node_state
from tests.helpers.cluster_checks import etcd_tool, metric

pytestmark = [pytest.mark.root]


def up(name: str, **spec):
    from plainnet.lab.cluster import ClusterSpec, LabCluster
    from plainnet.testing.pytest_plugin import _run_prefix

    cluster = LabCluster(ClusterSpec(name=f"{_run_prefix()}{name}", **spec))
    cluster.up(timeout=120)
    return cluster


@pytest.fixture(scope="module")
def hostgw():
    cluster = up("dh", nodes=2, pods_per_node=2)
    try:
        yield cluster
    finally:
        cluster.down()


def failing(cluster, node="node1"):
    status, findings = cluster.doctor(node)
    failed = {f["check"]: f for f in findings if f["status"] == "FAIL"}
    assert (status == 1) == bool(failed)
    return failed


def sh(cluster, node, command):
    cluster.lab.run(node, ["sh", "-c", command], check=True)


def fails_alone_and_its_fix_heals(cluster, check, node="node1"):
    """The fault is in: exactly ``check`` FAILs; its printed fix clears it."""
    failed = failing(cluster, node)
    assert set(failed) == {check}, failed
    fix = failed[check]["fix"]
    sh(cluster, node, fix)
    assert failing(cluster, node) == {}
    assert all(p.ok for p in probe_pods(cluster.pods))
    return fix


def test_a_healthy_lab_has_no_false_alarm(hostgw):
    for node in hostgw.nodes:
        status, findings = hostgw.doctor(node)
        assert status == 0 and all(f["status"] == "ok" for f in findings), findings
    result = hostgw.lab.run(
        "node1", [sys.executable, "-m", "plainnet.cli.main", "lab", "doctor", "--help"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0


def test_forwarding_off(hostgw):
    sh(hostgw, "node1", "sysctl -qw net.ipv4.ip_forward=0")
    assert "sysctl -w net.ipv4.ip_forward=1" in fails_alone_and_its_fix_heals(hostgw, "forwarding")


def test_a_forward_chain_with_policy_drop(hostgw):
    chain = "{ type filter hook forward priority 0; policy drop; }"
    sh(hostgw, "node1", f"nft add table ip filter && nft add chain ip filter FORWARD '{chain}'")
    try:
        assert not all(p.ok for p in probe_pods(hostgw.pods))
        fix = fails_alone_and_its_fix_heals(hostgw, "forward-policy")
        assert "nft insert rule ip filter FORWARD ip daddr 10.244.0.0/16 accept" in fix
    finally:
        sh(hostgw, "node1", "nft delete table ip filter")


def test_a_foreign_more_specific_route_over_a_peer_subnet(hostgw):
    peer = str(read_node_state(hostgw.run_dir("node2")).subnets[0])
    half = peer.replace("/24", "/25")
    sh(hostgw, "node1", f"ip route add {half} dev lo proto static")
    fix = fails_alone_and_its_fix_heals(hostgw, "route-shadowed")
    assert fix.startswith(f"ip route del {half}")


def test_the_pod_bridge_without_its_gateway(hostgw):
    state = read_node_state(hostgw.run_dir("node1"))
    subnet = state.subnets[0]
    gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
    sh(hostgw, "node1", f"ip addr del {gateway} dev cbr0")
    assert fails_alone_and_its_fix_heals(hostgw, "bridge") == f"ip addr add {gateway} dev cbr0"


def test_a_competing_conflist_that_sorts_first(hostgw):
    leftover = hostgw.cni_conf_dir / "00-flannel.conflist"
    leftover.write_text(json.dumps({"cniVersion": "1.0.0", "name": "cbr0", "plugins": []}))
    try:
        fix = fails_alone_and_its_fix_heals(hostgw, "cni-config")
        assert fix == f"mv {leftover} {leftover}.off"
    finally:
        leftover.unlink(missing_ok=True)
        leftover.with_name(leftover.name + ".off").unlink(missing_ok=True)


def test_a_node_network_inside_the_cluster_cidr(hostgw):
    uplink = hostgw.lab.host("node1").interfaces[0].name
    sh(hostgw, "node1", f"ip addr add 10.244.250.1/24 dev {uplink}")
    fix = fails_alone_and_its_fix_heals(hostgw, "cidrs")
    assert fix.startswith(f"ip addr del 10.244.250.1/24 dev {uplink}")


def test_a_leaked_pod_address(hostgw):
    subnet = read_node_state(hostgw.run_dir("node1")).subnets[0]
    store = FilePodAddressStore(store_directory(hostgw.run_dir("node1") / "ipam", subnet))
    leaked = subnet.network_address + 200

    def reserve(state):
        state.reservations[leaked] = Owner("gone" * 16, "eth0", "plainnet")

    store.run(reserve)
    failed = failing(hostgw)
    assert set(failed) == {"ipam-leaks"} and str(leaked) in failed["ipam-leaks"]["fact"]
    assert failed["ipam-leaks"]["fix"] == "plainnet doctor --release-leaked"
    status, _ = hostgw.doctor("node1", "--release-leaked")
    assert status == 0 and failing(hostgw) == {}


def test_a_record_that_claims_another_nodes_address(hostgw):
    key = "/coreos.com/network/subnets/10.244.200.0-24"
    value = {"PublicIP": str(hostgw.lab.host("node2").ipv4), "BackendType": "host-gw",
             "PlainnetNode": "intruder\nFAIL forged"}  # fmt: skip
    refused = "plainnet_peer_records_refused_total"
    before = metric(hostgw, "node1", refused)
    etcd_tool(hostgw, "put", key, json.dumps(value))
    try:
        deadline = time.monotonic() + 10
        while metric(hostgw, "node1", refused) <= before:
            assert time.monotonic() < deadline, "the agent did not refuse it"
            time.sleep(0.1)
        failed = failing(hostgw)
        assert set(failed) == {"duplicate-address"}, failed
        assert "intruder\\nFAIL" in failed["duplicate-address"]["fact"]  # escaped
        assert failed["duplicate-address"]["fix"] == f"etcdctl del {key}"
        _, findings = hostgw.doctor("node1")
        assert {f["check"]: f["status"] for f in findings}["refused-records"] == "warn"
    finally:
        etcd_tool(hostgw, "delete", key)  # the fix (the lab has no etcdctl)
    assert failing(hostgw) == {}


def test_the_agent_stopped(hostgw):
    hostgw.stop_agent("node1")
    try:
        failed = failing(hostgw)
        assert set(failed) == {"agent"}, failed
        assert "no agent answers" in failed["agent"]["fact"]
    finally:
        hostgw.start_agent("node1")
    deadline = time.monotonic() + 20
    while failing(hostgw):
        assert time.monotonic() < deadline, "the restarted agent did not come back"
        time.sleep(0.2)


def test_a_machine_without_plainnet_is_told_so_plainly(hostgw):
    """The etcd host runs no plainnet: doctor says so in its first line."""
    command = [sys.executable, "-m", "plainnet.cli.main", "doctor", "--run-dir", "/nonexistent"]
    result = hostgw.lab.run("etcd", command, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.splitlines()[0].startswith("warn  plainnet")
    assert "runs no plainnet" in result.stdout


@pytest.fixture(scope="module")
def overlay():
    cluster = up("dv", nodes=3, pods_per_node=1, topology="two-segments", backend="auto",
                 cluster_cidrs=["10.244.0.0/16"])  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.down()


def test_auto_across_two_segments_is_healthy_and_a_wrong_vxlan_mtu_fails(overlay):
    for node in overlay.nodes:
        status, findings = overlay.doctor(node)
        assert status == 0, [f for f in findings if f["status"] != "ok"]
    uplink = overlay.lab.host("node1").interfaces[0].name
    sh(overlay, "node1", f"ip link set {uplink} mtu 1400")  # the underlay shrinks under it
    try:
        failed = failing(overlay)
        assert set(failed) == {"vxlan-mtu"}, failed
        fix = failed["vxlan-mtu"]["fix"]
        assert fix.startswith(f"ip link set {DEVICE_NAME} mtu 1350 && restart the agent")
        sh(overlay, "node1", fix.split(" && ")[0])
        overlay.stop_agent("node1")
        overlay.start_agent("node1")
        deadline = time.monotonic() + 20
        while failing(overlay):
            assert time.monotonic() < deadline, failing(overlay)
            time.sleep(0.2)
        assert read_node_state(overlay.run_dir("node1")).mtu == 1350
    finally:
        sh(overlay, "node1", f"ip link set {uplink} mtu 1500")


def probed(cluster, node="node1"):
    _, findings = cluster.doctor(node, "--probe")
    return {f["check"]: f for f in findings if f["status"] == "FAIL"}


def test_probes_name_a_small_path_and_a_blocked_vxlan_port(overlay):
    """node2 is behind the router from node1: reached through VXLAN."""
    assert probed(overlay) == {}
    uplink = overlay.lab.host("node2").interfaces[0].name
    sh(overlay, "node2", f"ip link set {uplink} mtu 1300")  # below the pods' MTU + VXLAN
    try:
        failed = probed(overlay)
        assert set(failed) == {"path-mtu"}, failed
        assert (
            "node2" in failed["path-mtu"]["fact"] and "-byte packets" in failed["path-mtu"]["fact"]
        )
    finally:
        sh(overlay, "node2", f"ip link set {uplink} mtu 1500")  # the fix: the link's MTU
    assert probed(overlay) == {}
    drop = "{ type filter hook input priority 0; }"
    sh(overlay, "node2", f"nft add table inet blk && nft add chain inet blk in '{drop}' && "
                         "nft add rule inet blk in udp dport 8472 drop")  # fmt: skip
    try:
        failed = probed(overlay)
        assert set(failed) == {"vxlan-port"}, failed
        assert "UDP 8472" in failed["vxlan-port"]["fix"] and "node2" in failed["vxlan-port"]["fix"]
    finally:
        sh(overlay, "node2", "nft delete table inet blk")  # the fix: the rule goes
    assert probed(overlay) == {}
