"""Checks on a running lab cluster, shared by the agent's end-to-end tests."""

import json
import subprocess
import sys
import time
from pathlib import Path

from plainnet.node_state import read_node_state

REPO = Path(__file__).resolve().parents[2]
SUBNETS = "/coreos.com/network/subnets/"


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def etcd_tool(cluster, *args):
    result = cluster.lab.run(
        "node1",
        [sys.executable, "-m", "tests.helpers.etcd_tool", cluster.etcd_endpoint, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def subnet_of(cluster, node, version=4):
    state = read_node_state(cluster.run_dir(node))
    return next(str(s) for s in state.subnets if s.version == version)


def lease_key(cluster, node):
    state = read_node_state(cluster.run_dir(node))
    return SUBNETS + "&".join(f"{s.network_address}-{s.prefixlen}" for s in state.subnets)


def metric(cluster, node, name):
    return cluster.metric(node, name)


def agent_cleanup(cluster, node, *, keep_pods=False):
    """``plainnet agent cleanup`` on ``node``, as an operator runs it."""
    command = [
        sys.executable,
        "-m",
        "plainnet.cli.main",
        "agent",
        "cleanup",
        "--run-dir",
        str(cluster.run_dir(node)),
        *(["--keep-pods"] if keep_pods else []),
    ]
    return cluster.lab.run(node, command, capture_output=True, text=True)


DEVICE = "plainnet.vxlan"


def _lines(cluster, node, command):
    result = cluster.lab.run(node, command, capture_output=True, text=True)
    return result.stdout.splitlines() if result.returncode == 0 else []


def fdb(cluster, node, device=DEVICE):
    """The VXLAN device's permanent FDB entries as ``bridge`` shows them: MAC -> dsts."""
    found = {}
    for line in _lines(cluster, node, ["bridge", "fdb", "show", "dev", device]):
        words = line.split()
        if "permanent" in words and "dst" in words:
            found.setdefault(words[0], set()).add(words[words.index("dst") + 1])
    return found


def neighbours(cluster, node, device=DEVICE):
    """The VXLAN device's permanent neighbours as ``ip neigh`` shows them: IP -> MAC."""
    found = {}
    for line in _lines(cluster, node, ["ip", "neigh", "show", "dev", device, "nud", "permanent"]):
        words = line.split()
        if "lladdr" in words:
            found[words[0]] = words[words.index("lladdr") + 1]
    return found


def device_exists(cluster, node, device=DEVICE):
    return bool(_lines(cluster, node, ["ip", "link", "show", "dev", device]))


def link(cluster, node, device=DEVICE):
    """``ip -json -stats link show`` of ``device`` on ``node`` (sysfs would show the
    machine's own interfaces: the lab enters namespaces without remounting it)."""
    command = ["ip", "-json", "-stats", "link", "show", "dev", device]
    output = cluster.lab.run(node, command, capture_output=True, text=True, check=True).stdout
    return json.loads(output)[0]


def tx_packets(cluster, node, device=DEVICE):
    """Packets ``device`` on ``node`` has sent (the kernel's own counter)."""
    return link(cluster, node, device)["stats64"]["tx"]["packets"]


def pod_on(cluster, node):
    return next(p for p in cluster.pods if p.node == node)


def ping(cluster, pod, address, *args):
    """``ping`` from inside ``pod``; returns whether every echo was answered."""
    command = ["ping", "-q", "-c", "3", "-i", "0.05", "-W", "1", *args, str(address)]
    return (
        subprocess.run(
            ["ip", "netns", "exec", pod.namespace, *command], capture_output=True
        ).returncode
        == 0
    )
