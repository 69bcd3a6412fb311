"""IPAM benchmark: node subnets and pod addresses per second, each beside a baseline
measured in the same run, so the result is a ratio rather than a time on a noisy box.

    .venv/bin/python bench/ipam.py            # full run (~1 minute)
    .venv/bin/python bench/ipam.py --quick    # smaller counts, for a smoke test

Rows:
- node subnets: plainnet's SubnetPool allocating every subnet of a /8 -> /24 and a
  /48 -> /64 split, against the stdlib enumerating the same subnets
  (``ip_network.subnets()``, no bookkeeping at all — the floor for producing them).
- pod addresses: allocate+release pairs through the file store with 1 and 8 processes,
  against (a) the I/O floor of the same durability — flock, write, fsync, rename of a
  small file with no IPAM logic — and (b) the CNI reference IPAM plugin ``host-local``
  run as a process per call, as a container runtime runs it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plainnet.ipam.file_store import FilePodAddressStore
from plainnet.ipam.node_subnets import SubnetPool
from plainnet.ipam.pod_addresses import PodAddressAllocator

HOST_LOCAL = Path("/usr/lib/cni/host-local")
POD_SUBNET = "10.96.0.0/20"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(work: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = work()
    return count, time.perf_counter() - started


# --- node subnets ---------------------------------------------------------------------


def node_subnets_plainnet(cluster: str, prefix: int) -> int:
    pool = SubnetPool(ip_network(cluster), prefix)
    for _ in range(pool.size):
        pool.allocate()
    return pool.size


def node_subnets_stdlib(cluster: str, prefix: int) -> int:
    return sum(1 for _ in ip_network(cluster).subnets(new_prefix=prefix))


# --- pod addresses --------------------------------------------------------------------


def pods_plainnet(directory: Path, pairs: int, worker: str, durable: bool = True) -> int:
    pods = PodAddressAllocator(
        ip_network(POD_SUBNET), FilePodAddressStore(directory, durable=durable)
    )
    for n in range(pairs):
        container = f"{worker}-{n}"
        pods.allocate(container, "eth0")
        pods.release(container)
    return pairs


def pods_io_floor(directory: Path, pairs: int, worker: str) -> int:
    """Two locked, fsynced, atomically renamed writes per pair: what any crash-safe,
    multi-process store must pay, with no IPAM logic on top."""
    directory.mkdir(parents=True, exist_ok=True)
    state, tmp = directory / "floor.json", directory / "floor.json.tmp"
    for n in range(pairs * 2):
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        state.read_text() if state.exists() else None
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(out, json.dumps({"worker": worker, "n": n}).encode())
        os.fsync(out)
        os.close(out)
        tmp.replace(state)
        os.close(fd)
    return pairs


def pods_host_local(directory: Path, pairs: int, worker: str) -> int:
    config = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "bench",
            "ipam": {"type": "host-local", "subnet": POD_SUBNET, "dataDir": str(directory)},
        }
    ).encode()
    for n in range(pairs):
        for command in ("ADD", "DEL"):
            env = {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": f"{worker}-{n}",
                "CNI_NETNS": "/proc/self/ns/net",
                "CNI_IFNAME": "eth0",
                "CNI_PATH": str(HOST_LOCAL.parent),
                "PATH": "/usr/bin:/bin",
            }
            subprocess.run(
                [str(HOST_LOCAL)], input=config, env=env, check=True, stdout=subprocess.DEVNULL
            )
    return pairs


METHODS = {
    "plainnet": pods_plainnet,
    "plainnet-nofsync": None,
    "floor": pods_io_floor,
    "host-local": pods_host_local,
}


def run_in_processes(method: str, processes: int, pairs: int) -> tuple[int, float]:
    """Start ``processes`` workers that wait for one go signal, so interpreter start-up is
    not measured; returns total pairs and the wall time from go to the last finish."""
    with tempfile.TemporaryDirectory(prefix="pn-bench-") as tmp:
        go = Path(tmp) / "go"
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", method, tmp, str(pairs), f"w{i}", str(go)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(processes)
        ]
        time.sleep(0.5 + 0.1 * processes)  # let every worker import and wait
        started = time.perf_counter()
        go.touch()
        for worker in workers:
            worker.communicate()
            if worker.returncode != 0:
                raise SystemExit(f"benchmark worker {method} failed")
        return processes * pairs, time.perf_counter() - started


def worker_main(method: str, directory: str, pairs: int, name: str, go: str) -> None:
    while not Path(go).exists():
        time.sleep(0.001)
    store = Path(directory) / method
    if method == "plainnet-nofsync":
        pods_plainnet(store, pairs, name, durable=False)
    else:
        METHODS[method](store, pairs, name)  # type: ignore[misc]


# --- report ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, directory, pairs, name, go = args.worker
        worker_main(method, directory, int(pairs), name, go)
        return

    console = Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title="plainnet IPAM benchmark (higher is better)")
    for column in ("what", "plainnet /s", "baseline", "baseline /s", "ratio"):
        table.add_column(column, justify="left" if column in ("what", "baseline") else "right")

    def row(
        what: str, ours: tuple[int, float], baseline_name: str, baseline: tuple[int, float]
    ) -> None:
        mine, theirs = rate(*ours), rate(*baseline)
        table.add_row(
            what, f"{mine:,.0f}", baseline_name, f"{theirs:,.0f}", f"{mine / theirs:.2f}x"
        )

    for cluster, prefix in (("10.0.0.0/8", 24), ("fd00::/48", 64)):
        ours = timed(lambda c=cluster, p=prefix: node_subnets_plainnet(c, p))
        base = timed(lambda c=cluster, p=prefix: node_subnets_stdlib(c, p))
        row(
            f"node subnets {cluster} -> /{prefix} (all {ours[0]:,})",
            ours,
            "stdlib enumeration",
            base,
        )

    pairs = 100 if args.quick else 400
    for processes in (1, 8):
        per_process = max(pairs // processes, 20)
        ours = run_in_processes("plainnet", processes, per_process)
        floor = run_in_processes("floor", processes, per_process)
        row(
            f"pod alloc+release, file store, {processes} proc",
            ours,
            "flock+fsync+rename floor",
            floor,
        )
        nofsync = run_in_processes("plainnet-nofsync", processes, per_process)
        if HOST_LOCAL.exists():
            host_local = run_in_processes("host-local", processes, per_process)
            row(
                f"pod alloc+release, {processes} proc",
                ours,
                "host-local (exec per call)",
                host_local,
            )
        row(f"pod alloc+release, durable=False, {processes} proc", nofsync, "durable (fsync)", ours)

    console.print(table)
    console.print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, state on {tempfile.gettempdir()}"
    )


if __name__ == "__main__":
    main()
