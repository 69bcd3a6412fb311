"""Doctor benchmark: ``plainnet doctor`` on a node whose agent routes N peers (a real etcd
and agent in a lab namespace, as bench/agent.py builds them), against reading the same
routing table with ``ip -j route show`` in the same run.

    .venv/bin/python bench/doctor.py                 # N = 5,000 (~1 minute)
    .venv/bin/python bench/doctor.py --peers 20000

Per N: the whole doctor (process start, every check, the etcd list of N records and the
route comparison) — wall clock, best and median of five runs — and the time of ``ip -j
route show`` dumping and printing the same table. The goal: under 2 s at 5,000 peers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent import HERE, PLAINNET, route_events, start_etcd, topology, wait_installed
from plainnet.lab.builder import Lab

RUNS = 5


def timed(lab: Lab, command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = lab.run("node", command, capture_output=True, text=True)
    return time.perf_counter() - started, result


def measure(count: int) -> dict[str, float]:
    with Lab(topology()) as lab:
        etcd = start_etcd(lab)
        agent = None
        try:
            load = [
                sys.executable,
                str(HERE / "agent_probe.py"),
                etcd.endpoint,
                "load",
                str(count),
                "host-gw",
            ]
            lab.run("node", load, check=True, timeout=600)
            namespace = lab.host("node").namespace
            run_dir = Path(tempfile.mkdtemp(prefix="pn-bench-doctor-"))
            notifications = route_events(namespace)
            agent = lab.popen(
                "node",
                [*PLAINNET, "agent", "--etcd-endpoint", etcd.endpoint, "--node-name", "node",
                 "--node-ip", str(lab.host("node").ipv4), "--run-dir", str(run_dir),
                 "--metrics", "127.0.0.1:9158"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_installed(notifications, namespace, "host-gw", count, agent, time.perf_counter())
            doctor = [*PLAINNET, "doctor", "--json", "--node-name", "node", "--run-dir",
                      str(run_dir), "--etcd-endpoint", etcd.endpoint]  # fmt: skip
            doctor_runs, dump_runs = [], []
            for _ in range(RUNS):
                seconds, result = timed(lab, doctor)
                findings = json.loads(result.stdout)
                routes = next(f for f in findings if f["check"] == "route-missing")
                if routes["status"] != "ok" or str(count) not in routes["fact"]:
                    raise SystemExit(f"doctor did not compare {count} routes: {routes}")
                doctor_runs.append(seconds)
                seconds, result = timed(lab, ["ip", "-j", "route", "show"])
                if len(json.loads(result.stdout)) < count:
                    raise SystemExit("ip route show did not list every route")
                dump_runs.append(seconds)
            return {
                "peers": count,
                "doctor_best_s": min(doctor_runs),
                "doctor_median_s": statistics.median(doctor_runs),
                "ip_route_median_s": statistics.median(dump_runs),
            }
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=30)
            etcd.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, action="append")
    args = parser.parse_args()
    results = [measure(count) for count in args.peers or [5000]]
    table = Table(title="plainnet doctor on a node with N peers (host-gw, etcd)")
    for column in ("peers", "doctor (best)", "doctor (median)", "ip -j route show", "ratio"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r['peers']:,}",
            f"{r['doctor_best_s']:.2f} s",
            f"{r['doctor_median_s']:.2f} s",
            f"{r['ip_route_median_s']:.3f} s",
            f"{r['doctor_median_s'] / r['ip_route_median_s']:.1f}x",
        )
    Console().print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
