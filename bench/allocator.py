"""Allocator benchmark: plainnet allocator against kube-controller-manager's node IPAM,
in one run, on one real kube-apiserver (v1.20.2); and the agent's reaction to a Node.

    .venv/bin/python bench/allocator.py                    # 1,000 and 5,000 nodes (~6 min)
    .venv/bin/python bench/allocator.py --sizes 1000       # quicker

Rows:
- one node: a Node created (POST returned) -> its spec.podCIDR seen on a watch, p50/p99
  over 50 nodes created one after another;
- N nodes created at once (16 client threads): from the first POST until every one has
  a podCIDR.
- agent: a peer Node with a podCIDR created -> its route present in the agent node's
  kernel (netlink notification in that namespace), p50/p99 over 50 nodes.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Node
from rich.console import Console
from rich.table import Table

from plainnet.agent import ROUTE_PROTOCOL
from plainnet.agent.netlink import RTM_NEWROUTE, RouteSocket, iter_messages, parse_route
from plainnet.lab import netns
from plainnet.lab.cluster import ClusterSpec, LabCluster
from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import RBAC_MANIFEST, KubeControlPlane

PLAINNET = [sys.executable, "-m", "plainnet.cli.main"]


class PodCidrWatch:
    """Records when each Node is first seen with a podCIDR (a watch in a thread)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.client = Client(config=KubeConfig.from_file(str(kubeconfig)))
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()
        time.sleep(0.5)

    def _run(self) -> None:
        while True:  # the server ends watches now and then: watch again
            try:
                for _, node in self.client.watch(Node):
                    if node.spec and node.spec.podCIDR:
                        with self.lock:
                            self.seen.setdefault(node.metadata.name, time.perf_counter())
            except Exception:
                time.sleep(0.05)

    def wait(self, names: list[str], timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                if all(n in self.seen for n in names):
                    return max(self.seen[n] for n in names)
            time.sleep(0.002)
        raise SystemExit(
            f"{sum(n in self.seen for n in names)} of {len(names)} nodes assigned within {timeout}s"
        )


def create(kube: KubeControlPlane, name: str) -> float:
    status, reply = kube.request(
        "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    )
    if status != 201:
        raise SystemExit(f"creating node {name}: {reply}")
    return time.perf_counter()


def measure(
    kube: KubeControlPlane, watch: PodCidrWatch, prefix: str, sizes: list[int]
) -> dict[str, float]:
    single = []
    for i in range(50):
        name = f"{prefix}-one-{i}"
        created = create(kube, name)
        single.append(watch.wait([name], 60) - created)
    result = {
        "one_p50_ms": statistics.median(single) * 1000,
        "one_p99_ms": sorted(single)[int(len(single) * 0.99)] * 1000,
    }
    for size in sizes:
        names = [f"{prefix}-bulk{size}-{i}" for i in range(size)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: create(kube, n), names))
        result[f"bulk_{size}_s"] = watch.wait(names, 900) - started
    return result


def agent_reaction(events: int) -> tuple[float, float]:
    """A one-node lab on the Kubernetes datastore; peer Nodes with podCIDRs are created
    and the agent's route for each is awaited in the node's namespace."""
    spec = ClusterSpec(
        name="benchalloc",
        nodes=1,
        pods_per_node=0,
        datastore="kubernetes",
        allocator="plainnet",
        cluster_cidrs=["10.244.0.0/16"],
    )
    delays = []
    with LabCluster(spec) as cluster:
        namespace = cluster.lab.host("node1").namespace
        for i in range(events):
            sock = netns.socket_in(
                namespace, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE
            )
            sock.bind((0, 1 << 6))  # RTNLGRP_IPV4_ROUTE as a legacy group mask
            subnet = f"10.244.{100 + i}.0/24"
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": f"peer{i}"},
                "spec": {"podCIDR": subnet, "podCIDRs": [subnet]},
            }
            cluster.kube.request("POST", "/api/v1/nodes", body)
            cluster.kube.request(
                "PATCH",
                f"/api/v1/nodes/peer{i}/status",
                {
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": f"10.250.0.{100 + i}"}]
                    }
                },
            )
            updated = time.perf_counter()
            sock.settimeout(5)
            while True:
                data = sock.recv(1 << 16)
                now = time.perf_counter()
                hits = [parse_route(b) for k, _, _, b in iter_messages(data) if k == RTM_NEWROUTE]
                if any(
                    h and h[0] == ROUTE_PROTOCOL and str(h[2].destination) == subnet for h in hits
                ):
                    delays.append(now - updated)
                    break
            sock.close()
        with RouteSocket(
            netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        ) as routes:
            assert len(routes.routes(4, ROUTE_PROTOCOL)) == events
    delays.sort()
    return statistics.median(delays) * 1000, delays[int(len(delays) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, action="append")
    args = parser.parse_args()
    sizes = args.sizes or [1000, 5000]
    results = {}
    with EtcdServer() as etcd, KubeControlPlane(etcd.endpoint) as kube:
        kube.apply(RBAC_MANIFEST)
        watch = PodCidrWatch(kube.kubeconfig("admin"))
        allocator = subprocess.Popen(
            [
                *PLAINNET,
                "allocator",
                "--kubeconfig",
                str(kube.kubeconfig("allocator")),
                "--cluster-cidr",
                "10.0.0.0/9",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.5)
        results["plainnet allocator"] = measure(kube, watch, "p", sizes)
        print("plainnet allocator:", results["plainnet allocator"], flush=True)
        allocator.terminate()
        allocator.wait()
        kube.start_controller_manager("10.0.0.0/8", 24)  # the same range, as in a migration
        time.sleep(12)  # its range allocator starts ~10 s after the process
        results["kube-controller-manager"] = measure(kube, watch, "k", sizes)
    agent_p50, agent_p99 = agent_reaction(50)
    table = Table(title="node subnet allocation (lower is better)")
    for column in (
        "allocator",
        "one node p50",
        "one node p99",
        *(f"{s:,} nodes at once" for s in sizes),
    ):
        table.add_column(column, justify="left" if column == "allocator" else "right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['one_p50_ms']:.1f} ms",
            f"{r['one_p99_ms']:.1f} ms",
            *(f"{r[f'bulk_{s}_s']:.2f} s" for s in sizes),
        )
    console = Console(width=None if sys.stdout.isatty() else 130)
    console.print(table)
    console.print(
        f"agent: peer Node created -> route installed: p50 {agent_p50:.1f} ms, "
        f"p99 {agent_p99:.1f} ms (50 nodes)"
    )
    print(json.dumps({**results, "agent_p50_ms": agent_p50, "agent_p99_ms": agent_p99}))


if __name__ == "__main__":
    main()
