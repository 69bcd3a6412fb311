"""Cloud-routes benchmark: ``plainnet cloud-routes`` against a straight loop of boto3
calls writing the same routes, in one run, on one moto server (EC2) and one real
kube-apiserver (v1.20.2).

    .venv/bin/python bench/cloud_routes.py              # 50 nodes, 2 route tables (~1 min)
    .venv/bin/python bench/cloud_routes.py --nodes 40 --tables 3

The controller runs in this process (its own thread and event loop, its own RBAC
identity), so its calls are counted by its own metrics and a route's creation is
timed when the EC2 API confirmed it — no polling of the cloud. Rows:

- one node: a Node created with its podCIDR (POST returned) -> its route created in
  every table, p50/p99 over ``--single`` nodes created one after another;
- N nodes at once (created by 16 client threads): first POST -> every route in every
  table, with the EC2 calls that took;
- idle: EC2 calls per pass with nothing to change (the goal: one Describe per kind of
  object per pass, however many nodes — never a call per node);
- baseline: the same N x tables routes written by a loop of ``create_route`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from plainnet.cloud.aws import AwsRoutes
from plainnet.cloud.controller import CloudRoutes, CloudRoutesMetrics
from plainnet.cloud.plan import RouteChange
from plainnet.datastore.kubernetes import load_kube_config
from plainnet.lab.vpc import build_vpc
from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import KubeControlPlane
from plainnet.testing.moto_server import CREDENTIALS, MotoServer

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "cloud" / "aws" / "cloud-routes.yaml"
CLUSTER = "10.244.0.0/16"


class TimedRoutes(AwsRoutes):
    """The AWS provider, noting when each route's create was confirmed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()

    def apply(self, change: RouteChange) -> None:
        super().apply(change)
        if change.operation != "delete":
            with self.lock:
                self.created[(change.table, str(change.destination))] = time.perf_counter()

    def wait(self, keys: list[tuple[str, str]], timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                if all(k in self.created for k in keys):
                    return max(self.created[k] for k in keys)
            time.sleep(0.002)
        raise SystemExit(f"{sum(k in self.created for k in keys)} of {len(keys)} routes in time")


def calls(metrics: CloudRoutesMetrics) -> dict[str, float]:
    return {
        sample.labels["operation"]: sample.value
        for family in metrics.calls.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0)) for k, v in after.items() if v - before.get(k, 0)}


def run_controller(controller: CloudRoutes) -> Callable[[], None]:
    """Run the controller on a loop of its own in a thread; returns its stop."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(controller.run())

    def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()

    def stop() -> None:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)

    return stop


def pass_seconds(metrics: CloudRoutesMetrics) -> tuple[float, float]:
    """(sum, count) of the controller's pass durations so far."""
    found = {
        sample.name: sample.value
        for family in metrics.reconcile_seconds.collect()
        for sample in family.samples
    }
    return found["plainnet_cloud_reconcile_seconds_sum"], found[
        "plainnet_cloud_reconcile_seconds_count"
    ]


def node_body(name: str, provider_id: str, cidr: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"providerID": provider_id, "podCIDR": cidr, "podCIDRs": [cidr]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--tables", type=int, default=2)
    parser.add_argument("--idle-passes", type=int, default=5)
    args = parser.parse_args()
    total = args.nodes + args.single
    segments = [(chr(ord("a") + t), f"10.250.{t + 1}.0/24") for t in range(args.tables)]
    names = [f"n{i}" for i in range(total)]
    placed = [
        (n, segments[i % args.tables][0], f"10.250.{1 + i % args.tables}.{10 + i}")
        for i, n in enumerate(names)
    ]
    os.environ.update(CREDENTIALS)
    with EtcdServer() as etcd, KubeControlPlane(etcd.endpoint) as kube, MotoServer() as moto:
        kube.apply(MANIFEST)
        ec2 = moto.client()
        vpc = build_vpc(ec2, "bench", segments, placed)
        tables = list(vpc.tables.values())
        metrics = CloudRoutesMetrics()
        provider = TimedRoutes(
            vpc.vpc_id, "bench", endpoint_url=moto.endpoint, on_call=metrics.on_call
        )
        from lightkube import AsyncClient

        client = AsyncClient(config=load_kube_config(kube.kubeconfig("cloud-routes")))
        controller = CloudRoutes(
            client,
            provider,
            [ip_network(CLUSTER)],
            route_limit=total + 10,
            period=1.0,
            metrics=metrics,
        )
        stop = run_controller(controller)
        deadline = time.monotonic() + 30
        while controller.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)

        def keys(i: int) -> list[tuple[str, str]]:
            return [(t, f"10.244.{i}.0/24") for t in tables]

        def create(i: int) -> float:
            body = node_body(names[i], vpc.provider_ids[names[i]], f"10.244.{i}.0/24")
            status, reply = kube.request("POST", "/api/v1/nodes", body)
            if status != 201:
                raise SystemExit(f"creating node {names[i]}: {reply}")
            return time.perf_counter()

        single = []
        for i in range(args.nodes, total):
            created = create(i)
            single.append(provider.wait(keys(i), 30) - created)

        before = calls(metrics)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(create, range(args.nodes)))
        bulk_keys = [k for i in range(args.nodes) for k in keys(i)]
        bulk = provider.wait(bulk_keys, 120) - started
        bulk_calls = delta(calls(metrics), before)

        time.sleep(2.5)  # let the conditions and source/dest checks settle
        before, passes, spent = calls(metrics), controller.passes, pass_seconds(metrics)
        time.sleep(args.idle_passes * 1.0 + 0.5)
        idle_calls = delta(calls(metrics), before)
        idle_passes = controller.passes - passes
        after = pass_seconds(metrics)
        idle_pass = (after[0] - spent[0]) / max(1, after[1] - spent[1])
        stop()

        # baseline: the same routes into fresh tables by a straight loop
        fresh = [
            ec2.create_route_table(VpcId=vpc.vpc_id)["RouteTable"]["RouteTableId"] for _ in tables
        ]
        started = time.perf_counter()
        for table in fresh:
            for i in range(args.nodes):
                ec2.create_route(
                    RouteTableId=table,
                    DestinationCidrBlock=f"10.244.{i}.0/24",
                    InstanceId=vpc.instances[names[i]],
                )
        baseline = time.perf_counter() - started

    routes = args.nodes * args.tables
    table = Table(title=f"cloud-routes: {args.nodes} nodes, {args.tables} route tables (moto)")
    table.add_column("measure")
    table.add_column("plainnet cloud-routes", justify="right")
    table.add_column("boto3 loop (baseline)", justify="right")
    table.add_row(
        f"one node: podCIDR -> route in every table, p50 / p99 ({args.single})",
        f"{statistics.median(single) * 1000:.0f} / {max(single) * 1000:.0f} ms",
        "",
    )
    table.add_row(
        f"{args.nodes} nodes at once -> all {routes} routes",
        f"{bulk:.2f} s ({bulk / baseline:.2f}x)",
        f"{baseline:.2f} s",
    )
    table.add_row(
        "EC2 calls for those",
        ", ".join(f"{k} {v}" for k, v in sorted(bulk_calls.items())),
        f"CreateRoute {routes}",
    )
    table.add_row(
        f"idle: EC2 calls in {idle_passes} passes",
        ", ".join(f"{k} {v}" for k, v in sorted(idle_calls.items())) or "none",
        "",
    )
    table.add_row("idle: one pass (its two Describe calls)", f"{idle_pass * 1000:.0f} ms", "")
    Console().print(table)


if __name__ == "__main__":
    main()
