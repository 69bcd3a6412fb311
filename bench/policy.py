"""Network-policy benchmark: 1,000 NetworkPolicies over 5,000 pods, of which 50 run on
the measured node, in a two-node lab on a real kube-apiserver with every agent
enforcing (``--network-policy``).

    .venv/bin/python bench/policy.py                      # ~3 minutes
    .venv/bin/python bench/policy.py --policies 200 --pods 1000 --events 10

Rows (baselines from the same run: the table with no policy, the data path with none):
- compile: API objects -> the node's ruleset (parse + compile), in this process;
- apply: ``nft -f`` of that ruleset in the node's namespace; the empty table beside it;
- the agent: its own compile+apply per change (``plainnet_policy_apply_seconds``), RSS;
- policy created -> first dropped packet: a client on the other node sends a UDP
  datagram every millisecond to a pod on the measured node; a deny policy for that pod
  is created; the time from the API's answer to the last datagram that got through
  (p50/p99 over ``--events``);
- pod created -> isolated: a new pod in a namespace whose policy denies it all
  ingress; the same sender, from the status PATCH that gives the pod its address;
- data path: TCP throughput (iperf3) and ping RTT from the client pod to a pod that
  1,000 policies' rules are evaluated for, against the same path with no policy.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataplane import measure as dataplane_measure
from plainnet.lab import kubelet, netns
from plainnet.lab.cluster import ClusterSpec, LabCluster
from plainnet.namespaces import thread_in_namespace
from plainnet.policy import nft as policy_nft
from plainnet.policy.compiler import compile_ruleset
from plainnet.policy.model import Cluster, parse_cluster

NAMESPACES = 20
APPS = 50


def policy(namespace: str, name: str, spec: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def create_policy(cluster: LabCluster, document: dict) -> float:
    namespace = document["metadata"]["namespace"]
    status, reply = cluster.kube.request(
        "POST", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", document
    )
    if status != 201:
        raise SystemExit(f"creating a policy: {reply}")
    return time.perf_counter()


def delete_policy(cluster: LabCluster, namespace: str, name: str) -> None:
    cluster.kube.request(
        "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    )


def populate(cluster: LabCluster, policies: int, pods: int, local: int) -> None:
    """``pods - local`` Pod objects on nodes that are not in the lab (addresses from a
    range no lab node holds), ``local`` real pods on node1, and ``policies`` policies:
    policy i selects app (i mod 50) of its namespace and lets in app (i+1 mod 50)."""
    for n in range(NAMESPACES):
        kubelet.ensure_namespace(cluster.kube, f"bench-{n}")

    def remote(i: int) -> None:
        address = f"10.244.{100 + i // 250}.{2 + i % 250}"
        kubelet.register_pod(
            cluster.kube, f"bench-{i % NAMESPACES}", f"remote-{i}", f"far-{i % 98}",
            [address], {"app": f"app{i % APPS}"},
        )  # fmt: skip

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(remote, range(pods - local)))
    for i in range(local):
        cluster.add_pod(
            "node1", f"l{i}", kube_namespace=f"bench-{i % NAMESPACES}",
            labels={"app": f"app{i % APPS}"},
        )  # fmt: skip

    def make(i: int) -> None:
        """Policy i: in namespace n = i mod 20, isolates one of n's apps and lets in
        another of n's apps, or the pods of the next namespace, or an address block."""
        n = i % NAMESPACES
        own = n % 10 + 10 * (i // NAMESPACES % 5)  # apps in namespace n are n mod 10 + 10k
        if i % 7 == 0:
            peer: dict = {"ipBlock": {"cidr": f"10.244.{100 + i % 20}.0/24"}}
        elif i % 3 == 0:
            peer = {"namespaceSelector": {"matchLabels": {"ns": f"bench-{(n + 1) % NAMESPACES}"}}}
        else:
            other = n % 10 + 10 * ((i // NAMESPACES + 1) % 5)
            peer = {"podSelector": {"matchLabels": {"app": f"app{other}"}}}
        spec = {
            "podSelector": {"matchLabels": {"app": f"app{own}"}},
            "ingress": [{"from": [peer], "ports": [{"port": 80 + i % 5}]}],
        }
        create_policy(cluster, policy(f"bench-{n}", f"p{i}", spec))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(policies)))


class Sender:
    """UDP datagrams every millisecond from one pod to another; the receiver notes when
    each arrived."""

    def __init__(self, source_ns: str, target_ns: str, address: str) -> None:
        self.receiver = netns.socket_in(target_ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind((address, 9999))
        self.receiver.settimeout(0.2)
        self.sender = netns.socket_in(source_ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.address = address
        self.last = 0.0
        self.running = True
        threading.Thread(target=self._send, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _send(self) -> None:
        while self.running:
            self.sender.sendto(b"x", (self.address, 9999))
            time.sleep(0.001)

    def _receive(self) -> None:
        while self.running:
            try:
                self.receiver.recv(16)
                self.last = time.perf_counter()
            except TimeoutError:
                continue
            except OSError:
                return

    def flowing(self, timeout: float = 10) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() - self.last > 0.02:
            if time.perf_counter() > deadline:
                raise SystemExit("the datagrams do not get through")
            time.sleep(0.005)

    def stopped_since(self, since: float, timeout: float = 10) -> float:
        """Seconds from ``since`` to the last datagram that got through, once none has
        for 200 ms."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() - self.last < 0.2:
            if time.perf_counter() > deadline:
                raise SystemExit("the datagrams were never stopped")
            time.sleep(0.01)
        return max(0.0, self.last - since)

    def close(self) -> None:
        self.running = False
        self.sender.close()
        self.receiver.close()


def settle(cluster: LabCluster) -> None:
    """Wait until no agent has applied a policy change for two seconds (a data-path
    measurement must not share the machine's two cores with a busy agent)."""
    name = "plainnet_policy_applies_total"
    while True:
        before = [cluster.metric(n, name) for n in cluster.nodes]
        time.sleep(2)
        if [cluster.metric(n, name) for n in cluster.nodes] == before:
            return


def path(cluster: LabCluster, client, target):  # type: ignore[no-untyped-def]
    settle(cluster)
    return dataplane_measure(client.namespace, target.namespace, target.addresses[0], 2.0, 500, 5)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered) * 1000:.0f} / {p99 * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--local", type=int, default=50)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    spec = ClusterSpec(
        name="benchpol",
        nodes=2,
        pods_per_node=0,
        cluster_cidrs=["10.244.0.0/16"],
        datastore="kubernetes",
        network_policy=True,
        resync_seconds=300,
    )
    rows: list[tuple[str, str, str]] = []
    with LabCluster(spec) as cluster:
        node_ns = cluster.lab.host("node1").namespace
        client = cluster.add_pod("node2", "client", kube_namespace="clients", labels={"role": "c"})
        target = cluster.add_pod("node1", "target", kube_namespace="targets", labels={"role": "t"})
        populate(cluster, args.policies, args.pods, args.local)

        # compile and apply, as the agent does, in this process
        def items(path: str) -> list:
            return cluster.kube.request("GET", path)[1]["items"]

        objects = (
            items("/apis/networking.k8s.io/v1/networkpolicies"),
            items("/api/v1/pods"),
            items("/api/v1/namespaces"),
        )
        started = time.perf_counter()
        parsed, _ = parse_cluster(*objects)
        ruleset = compile_ruleset(parsed, "node1")
        compile_s = time.perf_counter() - started
        none = compile_ruleset(Cluster([], parsed.pods, parsed.namespaces), "node1")
        with thread_in_namespace(netns.path_of(node_ns)):
            timings = {}
            for label, table in (("none", none), ("full", ruleset)):
                started = time.perf_counter()
                policy_nft.apply(table)
                timings[label] = time.perf_counter() - started
        rows.append(
            (
                f"compile: {args.policies} policies, {args.pods} pods -> node1's table",
                f"{compile_s * 1000:.0f} ms ({ruleset.rules} rules, "
                f"{ruleset.selected_pods} pods isolated)",
                "",
            )
        )
        rows.append(
            (
                "apply (nft -f, one transaction)",
                f"{timings['full'] * 1000:.0f} ms",
                f"{timings['none'] * 1000:.0f} ms (no policy)",
            )
        )

        # the data path through 1,000 policies' table: the target isolated, the client let in
        allow = {
            "podSelector": {"matchLabels": {"role": "t"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "clients"}}}]}],
        }
        create_policy(cluster, policy("targets", "allow-clients", allow))
        loaded_path = path(cluster, client, target)

        spent = [
            cluster.metric("node1", f"plainnet_policy_apply_seconds_{kind}")
            for kind in ("sum", "count")
        ]
        sender = Sender(client.namespace, target.namespace, str(target.addresses[0]))
        try:
            denied = []
            for i in range(args.events):
                sender.flowing()
                deny = {"podSelector": {"matchLabels": {"role": "t"}}, "policyTypes": ["Ingress"]}
                delete_policy(cluster, "targets", "allow-clients")
                time.sleep(0.5)  # the allow goes: only the (new) deny may stop the traffic
                sender.flowing()
                created = create_policy(cluster, policy("targets", f"deny{i}", deny))
                denied.append(sender.stopped_since(created))
                delete_policy(cluster, "targets", f"deny{i}")
                create_policy(cluster, policy("targets", "allow-clients", allow))
        finally:
            sender.close()
        rows.append(("policy created -> first dropped packet, p50 / p99", percentiles(denied), ""))
        now = [
            cluster.metric("node1", f"plainnet_policy_apply_seconds_{kind}")
            for kind in ("sum", "count")
        ]
        per_apply = (now[0] - spent[0]) / max(1.0, now[1] - spent[1])
        rows.append(
            ("the agent's own compile + apply, mean per change", f"{per_apply * 1000:.0f} ms", "")
        )

        # a new pod in a namespace denied all ingress: isolated once the agent knows it
        deny_all = {"podSelector": {}, "policyTypes": ["Ingress"]}
        kubelet.ensure_namespace(cluster.kube, "guarded")
        create_policy(cluster, policy("guarded", "deny-all", deny_all))
        isolated = []
        for i in range(max(5, args.events // 2)):
            pod = cluster.add_pod("node1", f"new{i}", kube_namespace="guarded", register=False)
            sender = Sender(client.namespace, pod.namespace, str(pod.addresses[0]))
            try:
                sender.flowing()  # not yet a Pod object: no policy can select it
                kubelet.register_pod(
                    cluster.kube, "guarded", pod.name, "node1", pod.addresses, {"pod": pod.name}
                )
                registered = time.perf_counter()
                isolated.append(sender.stopped_since(registered))
            finally:
                sender.close()
        rows.append(("pod created -> isolated, p50 / p99", percentiles(isolated), ""))

        # the same path with no policy at all (the 5,000 pods still there)
        for n in [*range(NAMESPACES)]:
            cluster.kube.request(
                "DELETE", f"/apis/networking.k8s.io/v1/namespaces/bench-{n}/networkpolicies"
            )
        for namespace in ("targets", "guarded"):
            cluster.kube.request(
                "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
            )
        baseline_path = path(cluster, client, target)
        agent = cluster.agents["node1"]
        status_text = Path(f"/proc/{agent.pid}/status").read_text()
        rss = next(int(x.split()[1]) for x in status_text.splitlines() if x.startswith("VmRSS"))
        rows.append(("agent RSS (node1)", f"{rss / 1024:.0f} MB", ""))
        rows.append(
            (
                "TCP throughput client -> target (iperf3)",
                f"{loaded_path.gbits:.2f} Gbit/s ({loaded_path.gbits / baseline_path.gbits:.2f}x)",
                f"{baseline_path.gbits:.2f} Gbit/s (no policy)",
            )
        )
        rows.append(
            (
                "RTT client -> target (ping)",
                f"{loaded_path.rtt_us:.0f} µs",
                f"{baseline_path.rtt_us:.0f} µs (no policy)",
            )
        )
    table = Table(title=f"network policy: {args.policies} policies, {args.pods} pods")
    for column in ("measure", "plainnet", "baseline"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
