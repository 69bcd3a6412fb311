"""CNI benchmark: plainnet's plugin against the reference bridge + host-local plugins
(Debian's containernetworking-plugins) on an equivalent configuration, in one run.

    .venv/bin/python bench/cni.py                # 200 sequential ADD+DEL, 50 concurrent ADDs
    .venv/bin/python bench/cni.py --pairs 50     # quicker

Both plugins run as a runtime runs them: a fresh process per command, environment and
configuration on stdin, inside the node's network namespace, into pod namespaces made
beforehand (namespace creation is not timed). Equivalent means: a bridge holding the
gateway, dual-stack addresses from the node subnet, default routes, hairpin,
masquerade of traffic leaving the cluster, the node's MTU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plainnet.lab import netns
from plainnet.lab.cluster import REFERENCE_PLUGINS, ClusterSpec, LabCluster

NODE = "node1"


def plainnet_config() -> dict:
    return {"cniVersion": "1.0.0", "name": "plainnet", "type": "plainnet"}


def reference_config(data_dir: Path, masquerade: bool = True) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "reference",
        "type": "bridge",
        "bridge": "refbr0",
        "isGateway": True,
        "ipMasq": masquerade,
        "hairpinMode": True,
        "mtu": 1500,
        "ipam": {
            "type": "host-local",
            "dataDir": str(data_dir),
            "ranges": [[{"subnet": "10.99.0.0/16"}], [{"subnet": "fd00:99::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        },
    }


class Plugin:
    def __init__(
        self, name: str, executable: Path, config: dict, cni_path: str, node_namespace: str
    ) -> None:
        self.name = name
        self.executable = executable
        self.config = json.dumps(config).encode()
        self.cni_path = cni_path
        self.node_namespace = node_namespace

    def call(self, command: str, container: str, namespace: str) -> float:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_NETNS": str(netns.path_of(namespace)),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.cni_path,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        with netns.entering(self.node_namespace) as preexec:
            started = time.perf_counter()
            result = subprocess.run(
                [str(self.executable)],
                env=env,
                input=self.config,
                capture_output=True,
                preexec_fn=preexec,
            )
            elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{self.name} {command} failed: {result.stdout.decode()}")
        return elapsed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def run(plugin: Plugin, prefix: str, pairs: int, concurrent: int) -> dict[str, list[float]]:
    namespaces = [f"pn-{prefix}-{i}" for i in range(pairs + concurrent)]
    for namespace in namespaces:
        netns.create(namespace)
    timings: dict[str, list[float]] = {"ADD": [], "DEL": [], "ADD (50 at once)": []}
    try:
        for namespace in namespaces[:pairs]:
            timings["ADD"].append(plugin.call("ADD", namespace, namespace))
            timings["DEL"].append(plugin.call("DEL", namespace, namespace))
        burst = namespaces[pairs:]
        with ThreadPoolExecutor(max_workers=concurrent) as pool:
            timings["ADD (50 at once)"] = list(
                pool.map(lambda ns: plugin.call("ADD", ns, ns), burst)
            )
        for namespace in burst:
            plugin.call("DEL", namespace, namespace)
    finally:
        for namespace in namespaces:
            netns.remove(namespace)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    with (
        LabCluster(ClusterSpec(name="benchcni", nodes=1, pods_per_node=0)) as cluster,
        tempfile.TemporaryDirectory(prefix="pn-bench-cni-") as data_dir,
    ):
        node_namespace = cluster.lab.host(NODE).namespace
        plugins = [
            Plugin(
                "plainnet",
                cluster.cni_bin_dir / "plainnet",
                plainnet_config(),
                str(cluster.cni_bin_dir),
                node_namespace,
            ),
            Plugin(
                "bridge+host-local",
                REFERENCE_PLUGINS / "bridge",
                reference_config(Path(data_dir) / "a"),
                str(REFERENCE_PLUGINS),
                node_namespace,
            ),
            Plugin(
                "bridge+host-local, no ipMasq",
                REFERENCE_PLUGINS / "bridge",
                reference_config(Path(data_dir) / "b", masquerade=False),
                str(REFERENCE_PLUGINS),
                node_namespace,
            ),
        ]
        results = {
            p.name: run(p, f"bc{i}", args.pairs, args.concurrent) for i, p in enumerate(plugins)
        }
    table = Table(title="CNI plugin latency per command (lower is better)")
    for column in ("command", "plugin", "p50", "p95", "p50 vs plainnet"):
        table.add_column(column, justify="left" if column in ("command", "plugin") else "right")
    summary: dict[str, dict[str, float]] = {}
    for command in ("ADD", "DEL", "ADD (50 at once)"):
        ours = statistics.median(results["plainnet"][command])
        for name, timings in results.items():
            p50 = statistics.median(timings[command])
            table.add_row(
                command,
                name,
                f"{p50 * 1000:.1f} ms",
                f"{percentile(timings[command], 0.95) * 1000:.1f} ms",
                f"{p50 / ours:.2f}x",
            )
            summary.setdefault(command, {})[name] = round(p50 * 1000, 2)
    Console(width=None if sys.stdout.isatty() else 130).print(table)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
