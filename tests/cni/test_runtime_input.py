"""What a runtime (or someone who can run the plugin) may send, and what a node's life
does to the pod bridge: each through the real shim in a node namespace, answered by
the node's agent, kernel state read back with iproute2 (issue 12)."""

import json
import subprocess
import time

import pytest
from tests.cni.test_plugin import call, config, ip, new_netns

from plainnet.cni.dataplane import host_veth_name
from plainnet.cni.install import conflist

pytestmark = pytest.mark.root


@pytest.fixture
def node(cluster_factory, lab_name):
    """Two dual-stack nodes with their agents, no pods yet."""
    return cluster_factory(lab_name, nodes=2, pods_per_node=0)


def link_mac(cluster, host, name):
    shown = json.loads(ip(cluster, host, "-j", "link", "show", "dev", name))
    return shown[0]["address"]


def test_the_gateway_mac_stays_when_the_pod_with_the_lowest_mac_goes(node):
    """The bridge took the lowest MAC of its ports: deleting that pod changed the
    gateway's MAC, and every other pod lost traffic through it for 18-47 s."""
    first, second = node.add_pod("node1", "m1"), node.add_pod("node1", "m2")
    far = node.add_pod("node2", "far")
    gateway_mac = link_mac(node, "node1", "cbr0")
    ports = json.loads(ip(node, "node1", "-j", "link", "show", "master", "cbr0"))
    assert all(gateway_mac != port["address"] for port in ports), "the bridge has its own MAC"
    # without a MAC of its own the bridge takes its lowest port's: delete that pod
    lowest = min(ports, key=lambda port: port["address"])["ifname"]
    doomed = next(p for p in (first, second) if host_veth_name(p.namespace, "eth0") == lowest)
    talker = second if doomed is first else first
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", talker.namespace, "ping", "-c", "40", "-i", "0.05", "-W", "1",
         str(far.addresses[0])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.3)
    node.delete_pod(doomed)
    out, _ = pinger.communicate(timeout=30)
    received = int(out.split(" received")[0].rsplit(" ", 1)[1])
    assert received >= 39, out
    assert link_mac(node, "node1", "cbr0") == gateway_mac


@pytest.mark.parametrize("device", ["eth0", "lo"])
def test_a_bridge_name_of_another_device_is_code_7_and_changes_nothing(node, device):
    before = ip(node, "node1", "-o", "addr", "show", "dev", device)
    routes = ip(node, "node1", "route", "show")
    _, path = new_netns(node, f"br{device}")
    code, error = call(node, "node1", "ADD", config(bridge=device), "brx", path)
    assert (code, error["code"]) == (1, 7), error
    assert ip(node, "node1", "-o", "addr", "show", "dev", device) == before
    assert ip(node, "node1", "route", "show") == routes
    reservations = [
        json.loads(f.read_text())["reservations"]
        for f in (node.run_dir("node1") / "ipam").glob("*/reservations.json")
    ]
    assert all(not r for r in reservations)


def test_gc_of_one_network_leaves_another_alone_and_finds_unattached_veths(node):
    other = config(name="othernet")
    pods = {}
    for container, conf, ifname in (("p1", config(), "eth0"), ("o1", other, "net1"),
                                    ("o2", other, "net1"), ("o3", other, "net1")):  # fmt: skip
        _, path = new_netns(node, container)
        code, result = call(node, "node1", "ADD", conf, container, path, ifname)
        assert code == 0, result
        pods[container] = host_veth_name(container, ifname)
    # o3 as an ADD killed between making its veth and attaching it leaves it
    ip(node, "node1", "link", "set", "dev", pods["o3"], "nomaster")
    ip(node, "node1", "link", "set", "dev", pods["o3"], "alias", "")
    valid = {"cni.dev/valid-attachments": [{"containerID": "o1", "ifname": "net1"}]}
    assert call(node, "node1", "GC", {**other, **valid}) == (0, None)
    links = ip(node, "node1", "-o", "link", "show")
    assert pods["p1"] in links and pods["o1"] in links, "plainnet's pod and o1 stay"
    assert pods["o2"] not in links and pods["o3"] not in links
    held = {
        record["container_id"]
        for f in (node.run_dir("node1") / "ipam").glob("*/reservations.json")
        for record in json.loads(f.read_text())["reservations"].values()
    }
    assert held == {"p1", "o1"}


def test_check_after_the_loopback_plugin_checks_only_plainnets_interface(node):
    conf = node.directory / "cni" / "lo.conflist"
    chain = conflist(portmap=False, cni_version="1.0.0")  # Debian's loopback: up to 1.0
    chain["plugins"].insert(0, {"type": "loopback"})
    conf.write_text(json.dumps(chain))
    runtime = node.runtime("node1", conf)
    namespace, path = new_netns(node, "lo")
    runtime.add(namespace, path)
    runtime.check(namespace, path)  # was: "eth0 lacks address 127.0.0.1/8"
    runtime.delete(namespace, path)


@pytest.mark.parametrize(
    ("container", "ifname"),
    [("a;b", "eth0"), ("../../../etc/passwd", "eth0"), ("line\nforged", "eth0"),
     ("ünïcode", "eth0"), ("ok", "eth 0"), ("ok", "eth:0"), ("ok", ".."), ("ok", ".")],
)  # fmt: skip
def test_hostile_ids_and_interface_names_are_code_4(node, container, ifname):
    _, path = new_netns(node, "hx")
    code, error = call(node, "node1", "ADD", config(), container, path, ifname)
    assert (code, error["code"]) == (1, 4), error


def run_shim(cluster, env, stdin):
    result = cluster.lab.run(
        "node1",
        [str(cluster.cni_bin_dir / "plainnet")],
        env={"PATH": "/usr/bin:/bin", **env},
        input=stdin,
        capture_output=True,
    )
    return result.returncode, json.loads(result.stdout.decode())


def test_a_variable_that_is_not_utf8_is_code_4_without_a_traceback(node):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "u1", "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/run/netns/\udcff\udcfe"}  # fmt: skip
    code, error = run_shim(node, env, json.dumps(config()).encode())
    assert (code, error["code"], error["msg"]) == (1, 4, "CNI_NETNS is not valid UTF-8")
    assert "Traceback" not in node.agent_log("node1")


def test_a_configuration_over_1_mib_is_a_cni_error_not_sigpipe(node):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "big", "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/run/netns/x"}  # fmt: skip
    huge = json.dumps(config(padding="x" * (1 << 20))).encode()
    assert run_shim(node, env, huge)[1]["code"] == 7  # refused by the shim itself
    # just under the shim's limit, with an environment that puts the request over the
    # agent's: the agent answers and closes while the shim still writes
    near = json.dumps(config(padding="x" * ((1 << 20) - 200))).encode()
    code, error = run_shim(node, {**env, "CNI_ARGS": "IgnoreUnknown=1;X=" + "y" * 70000}, near)
    assert (code, error["code"]) == (1, 7) and "too large" in error["msg"]


def test_status_with_the_agent_down_is_code_50(node):
    node.stop_agent("node1")
    code, error = call(node, "node1", "STATUS", config())
    assert (code, error["code"]) == (1, 50) and "not running" in error["msg"]


def test_a_network_name_longer_than_an_interface_alias_works_and_gc_finds_it(node):
    long_net = config(name="n" * 300)
    _, path = new_netns(node, "long")
    code, result = call(node, "node1", "ADD", long_net, "ln1", path)
    assert code == 0, result
    veth = host_veth_name("ln1", "eth0")
    assert veth in ip(node, "node1", "-o", "link", "show", "master", "cbr0")
    assert call(node, "node1", "GC", {**long_net, "cni.dev/valid-attachments": []}) == (0, None)
    assert veth not in ip(node, "node1", "-o", "link", "show")


@pytest.mark.parametrize(
    ("args", "conf", "code"),
    [
        ("garbage", config(), 4),
        ("FOO=bar", config(), 4),
        ("IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar", config(), 0),
        ("", {k: v for k, v in config().items() if k != "type"}, 7),
        ("", config(name="bad name;"), 7),
        ("", config(prevResult={"ips": "x"}), 7),
    ],
)
def test_cni_args_and_configuration_through_the_shim(node, args, conf, code):
    _, path = new_netns(node, "ar")
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ar1", "CNI_IFNAME": "eth0",
           "CNI_NETNS": path, "CNI_ARGS": args}  # fmt: skip
    exit_code, answer = run_shim(node, env, json.dumps(conf).encode())
    assert (answer or {}).get("code", 0) == code, answer
    assert exit_code == (0 if code == 0 else 1)
