"""Data-plane benchmark: pod-to-pod TCP throughput (iperf3) and ping latency for the
host-gw, vxlan and auto backends, each against node-to-node over the same path in the
same run, so every result is a ratio to its baseline.

    .venv/bin/python bench/dataplane.py               # 5 s iperf3, 200 pings per path
    .venv/bin/python bench/dataplane.py --seconds 2   # quicker

The lab: two L2 segments joined by a router namespace (``--topology two-segments``):
node1 and node3 on one, node2 on the other. For every backend one cluster is built,
and two paths are measured from node1: to node3 (same segment) and to node2 (across
the router). host-gw cannot cross the router (it refuses those peers), so its
cross-segment row says so. Everything is veth inside this machine: absolute numbers
are CPU-bound and say little; the ratios say what encapsulation costs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from plainnet.ipam.types import IPAddress
from plainnet.lab.cluster import ClusterSpec, LabCluster
from plainnet.lab.topology import host_namespace

SOURCE = "node1"
PATHS = {"same segment": "node3", "cross segment": "node2"}
RTT = re.compile(r"= [\d.]+/([\d.]+)/")


@dataclass
class Measurement:
    gbits: float | None
    rtt_us: float | None


def run_in(namespace: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, *command], **kwargs)


def measure(source_ns: str, target_ns: str, address: IPAddress, seconds: float, pings: int):
    """iperf3 TCP throughput and mean ping RTT from ``source_ns`` to ``address``."""
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            target_ns,
            "iperf3",
            "--server",
            "--one-off",
            "--bind",
            str(address),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        gbits = None
        for _ in range(50):  # until the server listens
            result = run_in(
                source_ns,
                ["iperf3", "--client", str(address), "--time", str(seconds), "--json"],
                capture_output=True,
                text=True,
            )
            report = json.loads(result.stdout or "{}")
            if result.returncode == 0 and "sum_received" in report.get("end", {}):
                gbits = report["end"]["sum_received"]["bits_per_second"] / 1e9
                break
            if "unable to connect" not in report.get("error", "unable to connect"):
                break  # reachable but failing, or unreachable: no number
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait()
    ping = run_in(
        source_ns,
        ["ping", "-q", "-c", str(pings), "-i", "0.01", "-W", "1", str(address)],
        capture_output=True,
        text=True,
    )
    match = RTT.search(ping.stdout)
    rtt = float(match.group(1)) * 1000 if ping.returncode == 0 and match else None
    return Measurement(gbits, rtt)


def ratio(value: float | None, baseline: float | None) -> str:
    return f"{value / baseline:.2f}" if value and baseline else "-"


def number(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None else "unreachable"


def bench_backend(backend: str, seconds: float, pings: int, table: Table) -> None:
    name = f"bdp{backend.replace('-', '')}"
    spec = ClusterSpec(
        name=name,
        nodes=3,
        pods_per_node=1,
        cluster_cidrs=["10.244.0.0/16"],
        topology="two-segments",
        backend=backend,
    )
    with LabCluster(spec) as cluster:
        time.sleep(0.5)  # let every agent finish its first pass
        pods = {p.node: p for p in cluster.pods}
        for path, target in PATHS.items():
            node = measure(
                host_namespace(name, SOURCE),
                host_namespace(name, target),
                cluster.lab.host(target).ipv4,
                seconds,
                pings,
            )
            pod = measure(
                pods[SOURCE].namespace,
                pods[target].namespace,
                pods[target].addresses[0],
                seconds,
                pings,
            )
            table.add_row(
                backend,
                path,
                number(pod.gbits, 2),
                number(node.gbits, 2),
                ratio(pod.gbits, node.gbits),
                number(pod.rtt_us, 0),
                number(node.rtt_us, 0),
                ratio(pod.rtt_us, node.rtt_us),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 time per path")
    parser.add_argument("--pings", type=int, default=200, help="pings per path")
    parser.add_argument(
        "--backend", action="append", choices=["host-gw", "vxlan", "auto"], help="repeatable"
    )
    args = parser.parse_args()
    table = Table(title="pod-to-pod vs node-to-node (IPv4 pods, IPv4 underlay, TCP, 1 stream)")
    for column in (
        "backend",
        "path",
        "pod Gbit/s",
        "node Gbit/s",
        "throughput ratio",
        "pod RTT µs",
        "node RTT µs",
        "RTT ratio",
    ):
        table.add_column(
            column,
            justify="right" if "ratio" in column or "/" in column or "µs" in column else "left",
        )
    for backend in args.backend or ["host-gw", "vxlan", "auto"]:
        bench_backend(backend, args.seconds, args.pings, table)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
