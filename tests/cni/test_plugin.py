"""The CNI plugin as a runtime calls it: the real shim executable, in a node namespace,
answered by the node's agent; chained with Debian's reference portmap plugin.

Kernel state is read back with iproute2, reachability proven with packets."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from pathlib import Path

import pytest

from plainnet.cni.install import conflist
from plainnet.ipam.file_store import FilePodAddressStore, store_directory
from plainnet.ipam.pod_addresses import PodAddressAllocator
from plainnet.lab import netns
from plainnet.lab.cni_runtime import CniCallError

pytestmark = pytest.mark.root


def call(cluster, node, command, config, container="c1", netns_path="", ifname="eth0"):
    """Run the installed plugin executable the way a runtime does; (exit code, output)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(cluster.cni_bin_dir),
        "PATH": "/usr/bin:/bin",
    }
    result = cluster.lab.run(
        node,
        [str(cluster.cni_bin_dir / "plainnet")],
        env=env,
        input=json.dumps(config).encode(),
        capture_output=True,
    )
    output = result.stdout.decode().strip()
    return result.returncode, (json.loads(output) if output else None)


def config(version="1.1.0", **extra):
    return {"cniVersion": version, "name": "plainnet", "type": "plainnet", **extra}


def new_netns(cluster, name):
    namespace = f"pn-{cluster.spec.name}-{name}"
    netns.create(namespace)
    return namespace, str(netns.path_of(namespace))


def ip(cluster, host, *args):
    return cluster.lab.run(host, ["ip", *args], capture_output=True, text=True).stdout


def in_pod(namespace, *argv):
    return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True)


@pytest.fixture
def node(cluster_factory, lab_name):
    """One node (dual-stack) with its agent, no pods yet."""
    return cluster_factory(lab_name, nodes=2, pods_per_node=0)


def test_add_result_and_kernel_state(node):
    namespace, path = new_netns(node, "a")
    code, result = call(node, "node1", "ADD", config(), "ca", path)
    assert code == 0, result
    assert result["cniVersion"] == "1.1.0"
    assert next(i["name"] for i in result["interfaces"]) == "cbr0"
    assert result["interfaces"][2] == {**result["interfaces"][2], "name": "eth0", "sandbox": path}
    v4, v6 = (ip["address"] for ip in result["ips"])
    assert v4.startswith("10.244.") and v4.endswith("/24") and ":" in v6
    assert {r["dst"] for r in result["routes"]} == {"0.0.0.0/0", "::/0"}
    assert all(ip_entry["interface"] == 2 for ip_entry in result["ips"])
    # the kernel, read back with iproute2
    gateway = result["ips"][0]["gateway"]
    assert f"{gateway}/24" in ip(node, "node1", "-o", "addr", "show", "dev", "cbr0")
    assert v4 in in_pod(namespace, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"default via {gateway}" in in_pod(namespace, "ip", "route").stdout
    mtu = json.loads((node.run_dir("node1") / "subnet.json").read_text())["mtu"]
    assert f"mtu {mtu}" in in_pod(namespace, "ip", "link", "show", "eth0").stdout
    host_side = result["interfaces"][1]["name"]
    assert (
        "hairpin on"
        in node.lab.run(
            "node1",
            ["bridge", "-d", "link", "show", "dev", host_side],
            capture_output=True,
            text=True,
        ).stdout
    )
    assert in_pod(namespace, "ping", "-c1", "-W1", gateway).returncode == 0


def test_add_is_idempotent_and_del_is_idempotent_in_every_case(node):
    namespace, path = new_netns(node, "b")
    _, first = call(node, "node1", "ADD", config(), "cb", path)
    _, again = call(node, "node1", "ADD", config(), "cb", path)
    assert first["ips"] == again["ips"]
    for _ in range(2):  # twice
        assert call(node, "node1", "DEL", config(), "cb", path) == (0, None)
    assert call(node, "node1", "DEL", config(), "never-added", path) == (0, None)
    assert call(node, "node1", "ADD", config(), "cc", path)[0] == 0
    netns.remove(namespace)  # the netns is gone before DEL
    assert call(node, "node1", "DEL", config(), "cc", "") == (0, None)
    subnet_dirs = list((node.run_dir("node1") / "ipam").iterdir())
    held = [json.loads((d / "reservations.json").read_text())["reservations"] for d in subnet_dirs]
    assert all(h == {} for h in held), "DEL released everything"
    assert ip(node, "node1", "-o", "link", "show", "master", "cbr0").strip() == ""


def test_check_reports_what_is_wrong(node):
    namespace, path = new_netns(node, "c")
    _, result = call(node, "node1", "ADD", config(), "cc", path)
    checked = config(prevResult=result)
    assert call(node, "node1", "CHECK", checked, "cc", path) == (0, None)
    in_pod(namespace, "ip", "addr", "flush", "dev", "eth0")
    code, error = call(node, "node1", "CHECK", checked, "cc", path)
    assert code != 0 and error["code"] == 100
    assert "lacks address" in error["msg"]
    code, error = call(node, "node1", "CHECK", checked, "unknown", path)
    assert error["code"] == 100 and "no address is reserved" in error["msg"]


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_status_version_and_error_codes(node):
    assert call(node, "node1", "STATUS", config()) == (0, None)
    # an agent restarted while etcd is away serves CNI, but has no subnet yet
    node.stop_agent("node1")
    node.stop_etcd()
    node.start_agent("node1")
    try:
        wait_for(
            lambda: (call(node, "node1", "STATUS", config())[1] or {}).get("code") != 11, "CNI"
        )
        code, error = call(node, "node1", "STATUS", config())
        assert code != 0 and error["code"] == 50
        _, path = new_netns(node, "d")
        assert call(node, "node1", "ADD", config(), "cd", path)[1]["code"] == 11
    finally:
        node.etcd.start()
    wait_for(lambda: call(node, "node1", "STATUS", config()) == (0, None), "the claim")
    code, version = call(node, "node1", "VERSION", {})
    assert code == 0 and version["supportedVersions"] == ["1.0.0", "1.1.0"]
    assert call(node, "node1", "ADD", {"cniVersion": "0.3.1", "name": "x"})[1]["code"] == 1
    assert call(node, "node1", "ADD", config(), "", "")[1]["code"] == 4
    error = call(
        node,
        "node1",
        "ADD",
        {"name": "x", "cniVersion": "1.0.0", "mtu": "big"},
        "ce",
        "/nonexistent",
    )[1]
    assert error["code"] == 7


def test_an_agent_that_is_not_running_means_try_again_later(node):
    node.stop_agent("node1")
    code, error = call(node, "node1", "ADD", config(version="1.0.0"), "cf", "/run/netns/x")
    assert code != 0
    assert error == {**error, "cniVersion": "1.0.0", "code": 11}
    assert "not running" in error["msg"]
    assert call(node, "node1", "VERSION", {})[0] == 0  # still answers VERSION


def test_gc_releases_every_address_not_in_the_valid_attachments(node):
    conf = node.directory / "cni" / "gc.conflist"
    conf.write_text(json.dumps(conflist(portmap=False, cni_version="1.1.0")))
    runtime = node.runtime("node1", conf)
    kept = []
    for name in ("g1", "g2", "g3"):
        namespace, path = new_netns(node, name)
        runtime.add(namespace, path)
        kept.append(namespace)
    runtime.status()
    runtime.gc([(kept[0], "eth0")])  # g2 and g3 leaked, as after a crash
    reservations = [
        r
        for d in (node.run_dir("node1") / "ipam").iterdir()
        for r in json.loads((d / "reservations.json").read_text())["reservations"].values()
    ]
    assert {r["container_id"] for r in reservations} == {kept[0]}
    ports = ip(node, "node1", "-o", "link", "show", "master", "cbr0").splitlines()
    assert len(ports) == 1


def test_portmap_chained_after_plainnet_maps_a_node_port_to_the_pod(node):
    pod = node.add_pod(
        "node1",
        "web",
        runtime_config={
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
    )
    listener = netns.socket_in(pod.namespace)
    listener.bind((str(pod.addresses[0]), 80))
    listener.listen(4)
    listener.settimeout(5)
    node1 = str(node.lab.host("node1").ipv4)
    client = netns.socket_in(node.lab.host("node2").namespace)
    client.settimeout(5)
    try:
        client.connect((node1, 8080))  # from another node, to node1's own address
        connection, _ = listener.accept()
        connection.close()
    finally:
        client.close()
        listener.close()


def test_traffic_leaving_the_cluster_is_masqueraded_pod_traffic_is_not(node):
    pod = node.add_pod("node1", "out")
    etcd_host = node.lab.host("etcd")  # 10.250.0.1: outside the cluster CIDR
    listener = netns.socket_in(etcd_host.namespace)
    listener.bind((str(etcd_host.ipv4), 9999))
    listener.listen(1)
    listener.settimeout(5)
    client = netns.socket_in(pod.namespace)
    client.settimeout(5)
    try:
        client.connect((str(etcd_host.ipv4), 9999))
        _, (source, _) = listener.accept()
    finally:
        client.close()
        listener.close()
    assert source == str(node.lab.host("node1").ipv4)
    rules = node.lab.run(
        "node1", ["nft", "list", "table", "inet", "plainnet"], capture_output=True, text=True
    ).stdout
    assert "ip daddr != 10.244.0.0/16 masquerade" in rules


def test_fifty_concurrent_adds_get_fifty_distinct_reachable_addresses(node):
    namespaces = [new_netns(node, f"x{i}") for i in range(50)]

    def add(entry):
        namespace, path = entry
        return call(node, "node1", "ADD", config(), namespace, path)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(add, namespaces))
    assert all(code == 0 for code, _ in results), [r for r in results if r[0]]
    addresses = [result["ips"][0]["address"].split("/")[0] for _, result in results]
    assert len(set(addresses)) == 50
    for address in addresses:
        assert node.lab.ping("node2", address), f"{address} unreachable from node2"


def test_a_killed_agent_mid_adds_loses_nothing_and_doubles_nothing_after_gc(node):
    namespaces = [new_netns(node, f"k{i}") for i in range(30)]
    outcomes: dict[str, object] = {}

    def add(entry):
        namespace, path = entry
        outcomes[namespace] = call(node, "node1", "ADD", config(), namespace, path)

    threads = [threading.Thread(target=add, args=(entry,)) for entry in namespaces]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    os.kill(node.agents["node1"].pid, signal.SIGKILL)  # the server side dies mid-ADDs
    for thread in threads:
        thread.join(timeout=60)
    node.agents.pop("node1").wait()
    node.start_agent("node1")
    succeeded = {ns: out[1] for ns, out in outcomes.items() if out[0] == 0}
    # every ADD the kill cut off still answered with a CNI error (it exited 141 with
    # nothing on stdout, from SIGPIPE): "try again later"
    for code, answer in outcomes.values():
        assert code == 0 or (answer is not None and answer["code"] == 11), (code, answer)
    runtime_conf = node.directory / "cni" / "gc.conflist"
    runtime_conf.write_text(json.dumps(conflist(portmap=False, cni_version="1.1.0")))
    for _ in range(100):  # wait until the restarted agent serves
        if call(node, "node1", "STATUS", config())[0] == 0:
            break
        time.sleep(0.05)
    node.runtime("node1", runtime_conf).gc([(ns, "eth0") for ns in succeeded])
    state = json.loads((node.run_dir("node1") / "subnet.json").read_text())
    subnet = next(s for s in state["subnets"] if "." in s)
    store = FilePodAddressStore(store_directory(node.run_dir("node1") / "ipam", ip_network(subnet)))
    pool = PodAddressAllocator(ip_network(subnet), store)
    held = {str(r.address): r.owner.container_id for r in pool.reservations()}
    for namespace, result in succeeded.items():  # nothing a pod got was lost
        address = result["ips"][0]["address"].split("/")[0]
        assert held.get(address) == namespace
    assert set(held.values()) == set(succeeded)  # and nothing is held twice or leaked
    failed = [ns for ns in outcomes if ns not in succeeded]
    for namespace, path in namespaces:  # the retried ADDs get fresh, distinct addresses
        if namespace in failed:
            code, result = call(node, "node1", "ADD", config(), namespace, path)
            assert code == 0
            address = result["ips"][0]["address"].split("/")[0]
            assert address not in held
            held[address] = namespace


def linked_statically(executable: Path) -> bool:
    ldd = subprocess.run(["ldd", str(executable)], capture_output=True, text=True)
    return "not a dynamic executable" in ldd.stdout + ldd.stderr


def test_install_places_the_plugin_portmap_and_a_conflist_naming_them(tmp_path):
    from plainnet.cni.install import install, uninstall

    for _ in range(2):  # idempotent
        done = install(tmp_path / "bin", tmp_path / "net.d")
    assert done.kind == "static C shim" and linked_statically(done.plugin)
    assert os.access(done.plugin, os.X_OK)
    chain = [p["type"] for p in json.loads(done.conflist.read_text())["plugins"]]
    assert chain == ["plainnet", "portmap"]
    version = subprocess.run(
        [str(done.plugin)], env={"CNI_COMMAND": "VERSION"}, capture_output=True, text=True
    )
    assert json.loads(version.stdout)["supportedVersions"] == ["1.0.0", "1.1.0"]
    portmap = tmp_path / "bin" / "portmap"
    assert portmap.read_bytes() == Path("/usr/lib/cni/portmap").read_bytes()
    removed = uninstall(tmp_path / "bin", tmp_path / "net.d")
    assert {p.name for p in removed} >= {"plainnet", "portmap", "10-plainnet.conflist"}
    assert list((tmp_path / "bin").iterdir()) == [] == list((tmp_path / "net.d").iterdir())


def test_install_keeps_a_nodes_own_portmap_and_chains_only_what_exists(tmp_path):
    from plainnet.cni.install import install, uninstall

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    own = bin_dir / "portmap"
    own.write_bytes(b"#!/bin/sh\n")
    own.chmod(0o755)
    done = install(bin_dir, tmp_path / "net.d")
    assert done.kept == ["portmap"] and own.read_bytes() == b"#!/bin/sh\n"
    uninstall(bin_dir, tmp_path / "net.d")
    assert own.exists()  # the node's, not ours
    own.unlink()
    # no portmap anywhere: the chain leaves it out instead of failing every pod there
    done = install(bin_dir, tmp_path / "net.d", sources=(tmp_path / "nowhere",))
    assert done.missing == ["portmap"]
    chain = [p["type"] for p in json.loads(done.conflist.read_text())["plugins"]]
    assert chain == ["plainnet"]


def test_cross_node_pods_reach_each_other_with_plugin_addresses(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=2, pods_per_node=1)
    a, b = cluster.pods
    assert a.node != b.node
    client = netns.socket_in(a.namespace)
    listener = netns.socket_in(b.namespace)
    listener.bind((str(b.addresses[0]), 7000))
    listener.listen(1)
    listener.settimeout(5)
    client.settimeout(5)
    client.connect((str(b.addresses[0]), 7000))
    _, (source, _) = listener.accept()
    client.close()
    listener.close()
    assert source == str(a.addresses[0])  # through the agent's route, no NAT
    route = cluster.node_routes(a.node)
    assert any(str(b.addresses[0]).rsplit(".", 1)[0] in dst for dst in route)
    with pytest.raises(CniCallError):  # a bogus netns path is refused cleanly
        cluster.runtime("node1").add("bogus", "/nonexistent/netns")
    socket.socket().close()


def test_bandwidth_chained_after_plainnet_shapes_the_pod(node):
    conf = node.directory / "cni" / "bw.conflist"
    chain = conflist(portmap=False)
    chain["plugins"].append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    conf.write_text(json.dumps(chain))
    namespace, path = new_netns(node, "bw")
    result = node.runtime("node1", conf).add(
        namespace,
        path,
        runtime_config={
            "bandwidth": {
                "ingressRate": 1_000_000,
                "ingressBurst": 100_000,
                "egressRate": 1_000_000,
                "egressBurst": 100_000,
            }
        },
    )
    host_side = result["interfaces"][1]["name"]
    qdiscs = node.lab.run(
        "node1", ["tc", "qdisc", "show", "dev", host_side], capture_output=True, text=True
    ).stdout
    assert "tbf" in qdiscs
    node.runtime("node1", conf).delete(namespace, path)


def test_add_extends_a_previous_result_in_the_chain(node):
    _namespace, path = new_netns(node, "pr")
    prev = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "dummy"}],
        "ips": [{"address": "192.0.2.9/24", "interface": 0}],
        "dns": {"nameservers": ["x"]},
    }
    code, result = call(node, "node1", "ADD", config(prevResult=prev), "pr", path)
    assert code == 0
    assert result["interfaces"][0] == {"name": "dummy"}
    assert result["ips"][0]["address"] == "192.0.2.9/24"
    assert all(ip["interface"] == 3 for ip in result["ips"][1:])
    assert result["dns"] == {"nameservers": ["x"]}
