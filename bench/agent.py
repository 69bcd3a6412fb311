"""Agent benchmark: one plainnet agent in a lab namespace with an on-link /12 and N peers
in a real etcd, against ``ip -batch`` installing the same N routes in the same run.

    .venv/bin/python bench/agent.py                 # N = 1,000, 5,000, 20,000 (~3 minutes)
    .venv/bin/python bench/agent.py --peers 65535   # a full /8 of /24s: 65,536 nodes
    .venv/bin/python bench/agent.py --peers 1000    # one size
    .venv/bin/python bench/agent.py --backend vxlan # routes, neighbours and FDB entries

With ``--backend vxlan`` every peer needs a route, a neighbour and an FDB entry on the
VXLAN device; the baseline is then ``ip -batch`` (neighbours, onlink routes) plus
``bridge -batch`` (FDB) installing the same entries on a VXLAN device of its own.

Per N:
(a) agent process start -> all N routes in the kernel (wall clock, includes Python
    start-up, the etcd list and the install), vs. ``ip -batch`` adding the N routes;
(b) one peer added -> its route present, measured in the node's namespace from the
    moment the etcd write returns to the netlink notification, p50/p99 over 100 events
    (the last 100 peers are deleted and put back one at a time, so a full /8 can be
    measured too);
(c) CPU time of one idle periodic resync (process CPU over several resync periods
    with nothing changing, divided by their number);
(d) the agent's resident memory with N routes installed;
(e) what those idle resync passes cost the agent's event loop: the longest a pass held
    it (``plainnet_reconcile_loop_seconds``; kernel dumps and applies run on the kernel
    thread), and the worst lateness of the agent's 250 ms timer
    (``plainnet_event_loop_lag_seconds``), each read as a histogram bucket bound — how
    long a datastore or netlink event could wait for the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import ip_address
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_probe import peer
from plainnet.agent import ROUTE_PROTOCOL
from plainnet.agent.backends.vxlan import DEVICE_NAME, derived_mac
from plainnet.agent.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    RTM_NEWROUTE,
    RTNLGRP_IPV4_ROUTE,
    SOL_NETLINK,
    RouteSocket,
    iter_messages,
    parse_route,
)
from plainnet.lab import netns
from plainnet.lab.builder import Lab
from plainnet.lab.topology import Host, Segment, Topology
from plainnet.testing.etcd_server import EtcdServer

HERE = Path(__file__).resolve().parent
PLAINNET = [sys.executable, "-m", "plainnet.cli.main"]
RESYNC_SECONDS = 2.0
SO_RCVBUFFORCE = 33
AGENT_LOG = Path(tempfile.gettempdir()) / "pn-bench-agent.log"


def topology() -> Topology:
    return Topology(
        name="benchagent",
        segments=[Segment(name="lan", ipv4="172.16.0.0/12")],
        hosts=[
            Host(name="etcd", segment="lan"),
            Host(name="node", segment="lan"),
            Host(name="baseline", segment="lan"),
        ],
    )


def ip_batch_seconds(lab: Lab, count: int, backend: str) -> float:
    """``ip -batch`` (and for vxlan ``bridge -batch``) adding the same kernel entries in
    the baseline host: for host-gw each route with its own gateway."""
    ip_lines, bridge_lines = [], []
    if backend == "vxlan":
        local = str(lab.host("baseline").ipv4)
        lab.run("baseline", ["ip", "link", "add", "vx", "type", "vxlan", "id", "1", "local",
                             local, "dstport", "8472", "nolearning"], check=True)  # fmt: skip
        lab.run("baseline", ["ip", "link", "set", "vx", "up"], check=True)
    for index in range(count):
        _, subnet, gateway = peer(index)
        if backend == "vxlan":
            mac, vtep = derived_mac(ip_address(gateway)), subnet.split("/")[0]
            ip_lines.append(f"neigh add {vtep} lladdr {mac} dev vx nud permanent")
            ip_lines.append(f"route add {subnet} via {vtep} dev vx onlink")
            bridge_lines.append(f"fdb add {mac} dev vx dst {gateway} self permanent")
        else:
            ip_lines.append(f"route add {subnet} via {gateway} dev eth0")
    files = []
    try:
        commands = []
        for tool, lines in (("ip", ip_lines), ("bridge", bridge_lines)):
            if lines:
                with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as batch:
                    batch.write("\n".join(lines) + "\n")
                files.append(Path(batch.name))
                commands.append([tool, "-batch", batch.name])
        started = time.perf_counter()
        for command in commands:  # ~n^2: minutes at 65,536 routes
            lab.run("baseline", command, check=True, timeout=3600)
        return time.perf_counter() - started
    finally:
        for path in files:
            path.unlink()
        if backend == "vxlan":
            lab.run("baseline", ["ip", "link", "del", "vx"], check=True)
        else:
            lab.run("baseline", ["ip", "route", "flush", "proto", "boot"], check=True)


def count_installed(namespace: str, backend: str) -> int:
    """Peers fully installed: routes of plainnet's protocol, and with vxlan the fewest of
    routes and FDB entries (the neighbours go in the same batches before the routes)."""
    sock = netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    with RouteSocket(sock) as kernel:
        routes = len(kernel.routes(4, ROUTE_PROTOCOL))
        if backend != "vxlan":
            return routes
        device = next((i for i, (name, _) in kernel.links().items() if name == DEVICE_NAME), 0)
        return min(routes, len(kernel.fdb(device))) if device else 0


def route_events(namespace: str) -> socket.socket:
    """A socket in ``namespace`` that hears of every IPv4 route added there."""
    sock = netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
    sock.bind((0, 0))
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_IPV4_ROUTE)
    return sock


def wait_installed(
    events: socket.socket, namespace: str, backend: str, count: int, agent, started: float
) -> float:
    """Seconds from ``started`` until all ``count`` peers are installed. host-gw: counted
    from route notifications (a dump of 65,536 routes every few ms would take a core
    from the agent it measures); vxlan, or if notifications were lost: by dumps."""
    deadline = started + 600
    seen: set = set()
    events.settimeout(0.5)
    with events:
        while backend == "host-gw":
            if agent.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit("the agent did not install all routes")
            try:
                data = events.recv(1 << 22)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: notifications lost, count by dumps instead
                break
            for kind, _, _, body in iter_messages(data):
                if kind == RTM_NEWROUTE and (parsed := parse_route(body)):
                    protocol, _, route = parsed
                    if protocol == ROUTE_PROTOCOL:
                        seen.add(route.destination)
            if len(seen) >= count:
                return time.perf_counter() - started
    while count_installed(namespace, backend) < count:
        if agent.poll() is not None or time.perf_counter() > deadline:
            raise SystemExit("the agent did not install all routes")
        time.sleep(0.01)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_etcd(lab: Lab) -> EtcdServer:
    """A real etcd on the lab's host ``etcd`` (the caller removes it)."""
    etcd_host = lab.host("etcd")
    etcd = EtcdServer(
        host=str(etcd_host.ipv4),
        client_port=2379,
        spawn=lambda argv, **kw: lab.popen("etcd", argv, **kw),
        namespace=etcd_host.namespace,
    )
    etcd.start()
    return etcd


def measure(count: int, events: int, backend: str) -> dict[str, float]:
    with Lab(topology()) as lab:
        etcd = start_etcd(lab)
        try:
            baseline = ip_batch_seconds(lab, count, backend)
            lab.run(
                "node",
                [
                    sys.executable,
                    str(HERE / "agent_probe.py"),
                    etcd.endpoint,
                    "load",
                    str(count),
                    backend,
                ],
                check=True,
                timeout=600,
            )
            namespace = lab.host("node").namespace
            run_dir = Path(tempfile.mkdtemp(prefix="pn-bench-agent-"))
            notifications = route_events(namespace)  # before the agent: sees every route
            started = time.perf_counter()
            agent = lab.popen(
                "node",
                [
                    *PLAINNET,
                    "agent",
                    "--etcd-endpoint",
                    etcd.endpoint,
                    "--node-name",
                    "node",
                    "--node-ip",
                    str(lab.host("node").ipv4),
                    "--run-dir",
                    str(run_dir),
                    "--resync",
                    str(RESYNC_SECONDS),
                    "--metrics",
                    "127.0.0.1:9158",
                ],
                stdout=AGENT_LOG.open("w"),
                stderr=subprocess.STDOUT,
            )
            installed = wait_installed(notifications, namespace, backend, count, agent, started)
            probe = lab.run(
                "node",
                [
                    sys.executable,
                    str(HERE / "agent_probe.py"),
                    etcd.endpoint,
                    "latency",
                    str(events),
                    str(count - events),  # the last peers, deleted and put back
                    backend,
                ],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
                timeout=600,
            )
            delays = sorted(json.loads(probe.stdout))
            time.sleep(RESYNC_SECONDS)  # let the last changes settle
            cpu_before = cpu_seconds(agent.pid)
            before = metric_buckets(lab)
            periods = 5
            time.sleep(RESYNC_SECONDS * periods)
            idle_cpu = (cpu_seconds(agent.pid) - cpu_before) / periods
            after = metric_buckets(lab)
            held = worst_bucket(before, after, "plainnet_reconcile_loop_seconds")
            lag = worst_bucket(before, after, "plainnet_event_loop_lag_seconds")
            memory = rss_mb(agent.pid)
            agent.terminate()
            agent.wait(timeout=30)
        finally:
            etcd.remove()
    return {
        "peers": count,
        "agent_start_s": installed,
        "ip_batch_s": baseline,
        "event_p50_ms": statistics.median(delays) * 1000,
        "event_p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000,
        "resync_cpu_ms": idle_cpu * 1000,
        "rss_mb": memory,
        "pass_on_loop_ms": held * 1000,
        "loop_lag_ms": lag * 1000,
    }


def metric_buckets(lab: Lab) -> dict[str, dict[float, float]]:
    """The agent's histograms: name -> bucket bound -> cumulative count."""
    script = (
        "import urllib.request;print(urllib.request.urlopen("
        "'http://127.0.0.1:9158/metrics').read().decode())"
    )
    text = lab.run(
        "node", [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    histograms: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("_bucket{")
        if rest and not line.startswith("#"):
            bound = rest.split('le="')[1].split('"')[0]
            value = float("inf") if bound == "+Inf" else float(bound)
            histograms.setdefault(name, {})[value] = float(line.split()[-1])
    return histograms


def worst_bucket(before: dict, after: dict, name: str) -> float:
    """The smallest bucket bound that holds every observation of ``name`` in between."""
    old, new = before.get(name, {}), after[name]
    total = new[float("inf")] - old.get(float("inf"), 0)
    for bound in sorted(new):
        if new[bound] - old.get(bound, 0) >= total:
            return bound
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peers", type=int, action="append", help="peer counts (default 1000, 5000, 20000)"
    )
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--backend", choices=["host-gw", "vxlan"], default="host-gw")
    args = parser.parse_args()
    results = [measure(n, args.events, args.backend) for n in (args.peers or [1000, 5000, 20000])]
    title = {
        "host-gw": "host-gw, one gateway per peer",
        "vxlan": "vxlan: route, neighbour and FDB entry per peer",
    }[args.backend]
    table = Table(title=f"plainnet agent benchmark ({title})")
    for column in (
        "peers",
        "(a) agent start -> routes",
        "ip -batch",
        "ratio",
        "(b) event p50",
        "(b) event p99",
        "(c) idle resync CPU",
        "(d) RSS",
        "(e) pass on loop",
        "(e) loop lag",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r['peers']:,}",
            f"{r['agent_start_s']:.3f} s",
            f"{r['ip_batch_s']:.3f} s",
            f"{r['agent_start_s'] / r['ip_batch_s']:.2f}x",
            f"{r['event_p50_ms']:.1f} ms",
            f"{r['event_p99_ms']:.1f} ms",
            f"{r['resync_cpu_ms']:.0f} ms",
            f"{r['rss_mb']:.0f} MB",
            f"≤ {r['pass_on_loop_ms']:g} ms",
            f"≤ {r['loop_lag_ms']:g} ms",
        )
    Console(width=None if sys.stdout.isatty() else 150).print(table)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
