"""Peer view benchmark: a full rebuild (validate every record, resolve overlaps and
duplicates, compute every route and entry) at N peers, against the floor of building
the same N routes directly, in the same run. Pure Python, no root.

    .venv/bin/python bench/peer_view.py                # N = 5,000 and 20,000
    .venv/bin/python bench/peer_view.py --peers 1000
    .venv/bin/python bench/peer_view.py --peers 65535  # a full /8 of /24s
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from ipaddress import ip_address, ip_network

from rich.console import Console
from rich.table import Table

from plainnet.agent.backends import load_backend
from plainnet.agent.backends.base import RoutingContext
from plainnet.agent.backends.vxlan import VxlanLinks
from plainnet.agent.kernel_model import DesiredRoute
from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.peer_view import PeerView
from plainnet.datastore.records import PeerRecord

CLUSTER = [ip_network("10.0.0.0/8")]
LOCAL = (LocalNetwork(ip_network("192.168.0.0/15"), 2, "eth0", ip_address("192.168.0.1")),)


def records(count: int, backend: str) -> dict[str, PeerRecord]:
    found = {}
    for i in range(count):
        key = f"k{i}"
        address = ip_address(f"192.{168 + (i // 62500)}.{i // 250 % 250}.{i % 250 + 2}")
        subnet = ip_network((int(ip_address("10.0.0.0")) + ((i + 1) << 8), 24))  # up to 65,535
        found[key] = PeerRecord(key, f"n{i}", (subnet,), (address,), backend, claimed_at=i)
    return found


def best_of(runs: int, work) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def measure(count: int, backend: str) -> dict[str, float]:
    chosen = load_backend(backend)
    links = VxlanLinks(9, 4, "0e:70:c0:a8:00:01") if chosen.device_names else None
    context = RoutingContext(chosen, LOCAL, links)
    own = PeerRecord(
        "own", "own", (ip_network("10.0.0.0/24"),), (LOCAL[0].address,), chosen.record_type
    )
    peers = records(count, chosen.record_type)

    def rebuild() -> PeerView:
        view = PeerView(own, CLUSTER, context, {4: 24})
        view.rebuild(peers)
        assert len(view.desired) == count
        return view

    def floor() -> dict:
        return {
            r.subnets[0]: DesiredRoute(r.subnets[0], r.addresses[0], 2, r.node)
            for r in peers.values()
        }

    seconds, baseline = best_of(3, rebuild), best_of(3, floor)
    tracemalloc.start()
    view = rebuild()
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del view
    return {
        "peers": count,
        "backend": backend,
        "rebuild_s": seconds,
        "floor_s": baseline,
        "view_mb": memory / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, action="append")
    args = parser.parse_args()
    results = [
        measure(n, backend)
        for backend in ("host-gw", "vxlan")
        for n in (args.peers or [5000, 20000])
    ]
    table = Table(title="peer view rebuild")
    for column in ("backend", "peers", "rebuild", "routes only (floor)", "ratio", "view memory"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["backend"],
            f"{r['peers']:,}",
            f"{r['rebuild_s'] * 1000:.0f} ms",
            f"{r['floor_s'] * 1000:.0f} ms",
            f"{r['rebuild_s'] / r['floor_s']:.1f}x",
            f"{r['view_mb']:.1f} MB",
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
