"""Data-plane benchmark: pod-to-pod TCP throughput (iperf3) and ping latency for the
host-gw, vxlan and auto backends, each against node-to-node over the same path in the
same run, so every result is a ratio to its baseline.

    .venv/bin/python bench/dataplane.py               # 3 x 3 s iperf3, 500 pings per path
    .venv/bin/python bench/dataplane.py --seconds 1 --repeat 1   # quicker

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
import statistics
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
RTT = re.compile(r"time=([\d.]+) ms")


@dataclass
class Measurement:
    gbits: float | None
    rtt_us: float | None


def run_in(namespace: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, *command], **kwargs)


def measure(
    source_ns: str, target_ns: str, address: IPAddress, seconds: float, pings: int, repeat: int
) -> Measurement:
    """Median ping RTT and median iperf3 TCP throughput (of ``repeat`` runs) from
    ``source_ns`` to ``address``; both None if the address does not answer. Medians,
    because a 2-core machine's scheduler puts outliers into any mean."""
    ping = run_in(
        source_ns,
        ["ping", "-n", "-c", str(pings), "-i", "0.002", "-W", "1", str(address)],
        capture_output=True,
        text=True,
    )
    rtts = [float(m) for m in RTT.findall(ping.stdout)]
    if ping.returncode != 0 or not rtts:
        return Measurement(None, None)
    return Measurement(
        statistics.median(iperf(source_ns, target_ns, address, seconds) for _ in range(repeat)),
        statistics.median(rtts) * 1000,
    )


def iperf(source_ns: str, target_ns: str, address: IPAddress, seconds: float) -> float:
    """One iperf3 TCP run (one stream), in Gbit/s."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", target_ns, "iperf3", "--server", "--one-off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):  # until the server listens
            result = run_in(
                source_ns,
                ["iperf3", "--client", str(address), "--time", str(seconds), "--json"],
                capture_output=True,
                text=True,
            )
            report = json.loads(result.stdout or "{}")
            if "sum_received" in report.get("end", {}):
                return report["end"]["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)
        raise RuntimeError(f"iperf3 to {address} failed: {report.get('error')}")
    finally:
        server.kill()
        server.wait()


def ratio(value: float | None, baseline: float | None) -> str:
    return f"{value / baseline:.2f}" if value and baseline else "-"


def number(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None else "unreachable"


def bench_backend(backend: str, seconds: float, pings: int, repeat: int, table: Table) -> None:
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
                repeat,
            )
            pod = measure(
                pods[SOURCE].namespace,
                pods[target].namespace,
                pods[target].addresses[0],
                seconds,
                pings,
                repeat,
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
    parser.add_argument("--seconds", type=float, default=3.0, help="iperf3 time per run")
    parser.add_argument("--repeat", type=int, default=3, help="iperf3 runs per path")
    parser.add_argument("--pings", type=int, default=500, help="pings per path")
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
        bench_backend(backend, args.seconds, args.pings, args.repeat, table)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
