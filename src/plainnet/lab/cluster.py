"""A lab Kubernetes-style cluster network: etcd, one plainnet agent per node, pods.

On top of a lab underlay (:mod:`plainnet.lab.builder`):

- host ``etcd`` runs a real etcd server on its lab address; the network config is
  written into it the way an operator would (``plainnet etcd init``);
- every node host runs a real ``plainnet agent`` process in its own namespace, as on
  a machine, with its own run directory (``/run/plainnet/labs/<lab>/<node>``) since
  all lab nodes share this machine's filesystem;
- pods are namespaces ``pn-<lab>-<node>-p<k>`` plumbed by the plainnet CNI plugin,
  called through its conflist exactly as a container runtime calls it
  (:mod:`plainnet.lab.cni_runtime`), with the reference portmap plugin chained after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

from plainnet.cni.install import CONFLIST, install
from plainnet.errors import PlainnetError
from plainnet.ipam.types import IPAddress
from plainnet.lab import kubelet, netns
from plainnet.lab.builder import STATE_DIR, Lab
from plainnet.lab.cni_runtime import CniCallError, CniRuntime
from plainnet.lab.kubelet import PortSpec
from plainnet.lab.topology import PREFIX, TOPOLOGIES, Host, Topology
from plainnet.lab.vpc import InNamespace, VpcLayout, build_vpc
from plainnet.node_state import NodeState, read_node_state
from plainnet.testing.etcd_server import EtcdServer, free_port
from plainnet.testing.kube_control_plane import RBAC_MANIFEST, KubeControlPlane
from plainnet.testing.moto_server import CREDENTIALS as MOTO_CREDENTIALS
from plainnet.testing.moto_server import MotoServer

ETCD_PORT = 2379
KUBE_API_PORT = 6443
MOTO_PORT = 5000
#: The admin kubeconfig through the loopback door, in the cluster's directory.
KUBECONFIG = "kubeconfig"
NETWORK_POLICY_MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "network-policy.yaml"
CLOUD_ROUTES_MANIFEST = (
    Path(__file__).resolve().parents[3] / "deploy" / "cloud" / "aws" / "cloud-routes.yaml"
)
#: Debian's containernetworking-plugins (portmap, bridge, host-local, ...).
REFERENCE_PLUGINS = Path("/usr/lib/cni")
PLAINNET = [sys.executable, "-m", "plainnet.cli.main"]


@dataclass
class ClusterSpec:
    name: str = "demo"
    nodes: int = 3
    pods_per_node: int = 2
    cluster_cidrs: list[str] = field(default_factory=lambda: ["10.244.0.0/16", "fd00:10:244::/56"])
    backend: str = "host-gw"
    lease_ttl: int = 3600
    resync_seconds: float = 30.0
    #: "etcd" (Flannel's format) or "kubernetes" (Node objects; podCIDRs from the real
    #: kube-controller-manager --allocate-node-cidrs).
    datastore: str = "etcd"
    #: With the kubernetes datastore, who assigns podCIDRs: "kcm" (kube-controller-manager
    #: --allocate-node-cidrs), "plainnet" (plainnet allocator) or "none" (the caller
    #: runs one, e.g. the image's allocator container).
    allocator: str = "kcm"
    #: Run a plainnet agent process on every node (False: the caller runs the agents,
    #: e.g. the image's agent container; no pods are made then either).
    agents: bool = True
    #: "single-segment" (all nodes on one L2 segment) or "two-segments" (nodes alternate
    #: between two segments joined by a router that knows nothing of pod subnets).
    topology: str = "single-segment"
    #: The node's address families (--node-ip): 0 — every one its host has (IPv4
    #: first); 4 or 6 — that family's only (a single-underlay VXLAN node).
    underlay: int = 0
    #: Agents enforce NetworkPolicies (--network-policy; the Kubernetes datastore).
    network_policy: bool = False


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    #: the pod's network namespace
    namespace: str
    addresses: tuple[IPAddress, ...]
    #: with the Kubernetes datastore: the Pod object's namespace (its name is ``name``)
    kube_namespace: str = "default"


def cluster_topology(spec: ClusterSpec) -> Topology:
    """The underlay: host ``etcd`` (the datastore) on the first segment, then the nodes."""
    ipv6 = spec.underlay == 6 or any(ip_network(c).version == 6 for c in spec.cluster_cidrs)
    if spec.topology not in TOPOLOGIES:
        raise PlainnetError(
            f"unknown topology {spec.topology!r} (known: {', '.join(sorted(TOPOLOGIES))})"
        )
    underlay = TOPOLOGIES[spec.topology](spec.name, spec.nodes, ipv6=ipv6, host_prefix="node")
    return underlay.model_copy(
        update={"hosts": [Host(name="etcd", segment=underlay.segments[0].name), *underlay.hosts]}
    )


class LabCluster:
    def __init__(self, spec: ClusterSpec, state_dir: Path | None = None) -> None:
        if spec.topology == "cloud":  # the cloud scenario: Nodes, the VPC's routes
            ipv4 = [c for c in spec.cluster_cidrs if ip_network(c).version == 4]
            spec = replace(spec, datastore="kubernetes", backend="cloud", cluster_cidrs=ipv4)
        self.spec = spec
        self.lab = Lab(cluster_topology(spec), state_dir)
        self.directory = self.lab.state_dir / spec.name
        self.etcd: EtcdServer | None = None
        #: the API server and controller manager, when this process started them
        self.kube: KubeControlPlane = None  # type: ignore[assignment]
        self.agents: dict[str, subprocess.Popen[Any]] = {}
        self.pods: list[Pod] = []
        self.vpc: VpcLayout | None = None
        #: the loopback door to the API server, when this process opened it
        self._door: subprocess.Popen[Any] | None = None
        #: Kubernetes namespaces made for lab pods (each once)
        self._namespaces: set[str] = set()

    @property
    def nodes(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.spec.nodes + 1)]

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.lab.host('etcd').ipv4}:{ETCD_PORT}"

    def run_dir(self, node: str) -> Path:
        return self.directory / node

    # --- lifecycle ----------------------------------------------------------------------

    def up(self, timeout: float = 60) -> LabCluster:
        self.lab.up()
        try:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(parents=True)
            self.start_etcd()
            if self.spec.topology == "cloud":
                self.start_cloud()
            if self.spec.datastore == "kubernetes":
                self.start_kubernetes()
            if self.spec.topology == "cloud":
                self.start_cloud_routes()
            else:
                self.plainnet(
                    "node1",
                    "etcd",
                    "init",
                    "--etcd-endpoint",
                    self.etcd_endpoint,
                    *self._cidr_args(),
                    "--backend",
                    self.spec.backend,
                )
            if not self.spec.agents:
                self.save()
                return self
            for node in self.nodes:
                self.start_agent(node)
            deadline = time.monotonic() + timeout
            self.install_cni()
            for node in self.nodes:
                self.wait_for_node_state(node, deadline)
                self.wait_for_cni(node, deadline)
                for k in range(1, self.spec.pods_per_node + 1):
                    self.add_pod(node, f"p{k}")
            self.save()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        self._close_api_door()
        self.lab.down()  # stops etcd and the agents: they run inside the lab's namespaces
        for process in self.agents.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LabCluster:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def save(self) -> None:
        record = {
            "spec": asdict(self.spec),
            "pods": [
                {
                    "name": p.name,
                    "node": p.node,
                    "namespace": p.namespace,
                    "addresses": [str(a) for a in p.addresses],
                    "kube_namespace": p.kube_namespace,
                }
                for p in self.pods
            ],
        }
        (self.directory / "cluster.json").write_text(json.dumps(record, indent=1))

    @classmethod
    def load(cls, name: str, state_dir: Path | None = None) -> LabCluster | None:
        path = (state_dir or STATE_DIR) / name / "cluster.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        cluster = cls(ClusterSpec(**record["spec"]), state_dir)
        cluster.pods = [
            Pod(
                p["name"],
                p["node"],
                p["namespace"],
                tuple(ip_address(a) for a in p["addresses"]),
                p.get("kube_namespace", "default"),
            )
            for p in record["pods"]
        ]
        return cluster

    # --- parts ----------------------------------------------------------------------------

    def start_etcd(self) -> None:
        etcd_host = self.lab.host("etcd")
        self.etcd = EtcdServer(
            host=str(etcd_host.ipv4),
            client_port=ETCD_PORT,
            data_dir=self.directory / "etcd",
            spawn=partial(self.lab.popen, "etcd"),
            namespace=etcd_host.namespace,
        )
        self.etcd.start()

    def _cidr_args(self) -> list[str]:
        return [arg for c in self.spec.cluster_cidrs for arg in ("--cluster-cidr", c)]

    def start_kubernetes(self) -> None:
        """kube-apiserver (TLS, tokens, RBAC) and kube-controller-manager's node IPAM on the
        lab's etcd host; deploy/rbac.yaml applied; a Node object per lab node."""
        etcd_host = self.lab.host("etcd")
        workdir = self.directory / "kube"
        workdir.mkdir(parents=True, exist_ok=True)
        self.kube = KubeControlPlane(
            self.etcd_endpoint,
            host=str(etcd_host.ipv4),
            port=KUBE_API_PORT,
            workdir=workdir,
            spawn=partial(self.lab.popen, "etcd"),
            connect=partial(netns.socket_in, etcd_host.namespace),
        )
        self.kube.start()
        self.open_api_door()
        self.kube.apply(RBAC_MANIFEST)
        if self.spec.network_policy:
            self.kube.apply(NETWORK_POLICY_MANIFEST)
        if self.spec.allocator == "plainnet":
            log = (self.directory / "allocator.log").open("ab")
            self.allocator = self.lab.popen(
                "etcd",
                [
                    *PLAINNET,
                    "allocator",
                    "--kubeconfig",
                    str(self.kube.kubeconfig("allocator")),
                    *self._cidr_args(),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            log.close()
        elif self.spec.allocator == "kcm":
            ipv4 = [c for c in self.spec.cluster_cidrs if ip_network(c).version == 4]
            self.kube.start_controller_manager(ipv4[0], 24)
        provider_ids = self.vpc.provider_ids if self.vpc else {}
        for node in self.nodes:
            self.kube.create_node(
                node, [str(a) for a in self.lab.host(node).addresses()], provider_ids.get(node)
            )

    def open_api_door(self) -> None:
        """A loopback door to the API server (:mod:`plainnet.lab.forward`) and an admin
        kubeconfig through it (``plainnet lab kubeconfig``), so kubectl on this machine
        reaches the lab without the machine's namespace getting a route into it."""
        port = free_port()
        log = (self.directory / "api-forward.log").open("ab")
        door = subprocess.Popen(
            [
                *PLAINNET[:1],
                "-m",
                "plainnet.lab.forward",
                "--listen-port",
                str(port),
                "--namespace",
                self.lab.host("etcd").namespace,
                "--target",
                f"{self.lab.host('etcd').ipv4}:{KUBE_API_PORT}",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._door = door
        (self.directory / "api-forward.pid").write_text(str(door.pid))
        config = json.loads(self.kube.kubeconfig("admin").read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://localhost:{port}"
        (self.directory / KUBECONFIG).write_text(json.dumps(config, indent=1))

    def _close_api_door(self) -> None:
        """Stop the door: this process's child, or (``lab down`` from another process)
        the PID it recorded, if that is still the door."""
        if self._door is not None:
            netns.terminate(self._door, grace_seconds=3)
            return
        try:
            pid = int((self.directory / "api-forward.pid").read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"plainnet.lab.forward" in command:  # ours, not a reused PID
            netns.stop_processes([pid])

    # --- the cloud scenario (topology "cloud") ---------------------------------------------

    def start_cloud(self) -> None:
        """moto's EC2 on the control-plane host's loopback, and the VPC in it: a subnet and
        route table per segment, an instance per node (:mod:`plainnet.lab.vpc`)."""
        self.moto = MotoServer(
            port=MOTO_PORT,
            spawn=partial(self.lab.popen, "etcd", env={**os.environ, **MOTO_CREDENTIALS}),
            namespace=self.lab.host("etcd").namespace,
            log_path=self.directory / "moto.log",
        ).start()
        segments = [(s.name, str(s.ipv4)) for s in self.lab.topology.segments]
        nodes = [
            (n, self.lab.host(n).interfaces[0].segment, str(self.lab.host(n).ipv4))
            for n in self.nodes
        ]
        self.vpc = build_vpc(self.ec2(), self.spec.name, segments, nodes)
        self.vpc.save(self.directory / "vpc.json")

    def ec2(self) -> InNamespace:
        """An EC2 client of the lab's moto (calls run inside the control-plane host)."""
        return InNamespace(self.moto.client(), netns.path_of(self.lab.host("etcd").namespace))

    def start_cloud_routes(self) -> None:
        """The VPC router's fabric, the cloud-routes controller, and each node's route to
        the cluster CIDR through its subnet's VPC router address (an instance's default
        route, in the cloud)."""
        assert self.vpc is not None
        router = self.lab.host("vpc")
        on_segment = {i.segment: i for i in router.interfaces}
        env = {**os.environ, **MOTO_CREDENTIALS}
        self._spawn_logged(
            "etcd",
            [
                sys.executable,
                "-m",
                "plainnet.lab.vpc",
                "--endpoint",
                self.moto.endpoint,
                "--vpc-id",
                self.vpc.vpc_id,
                "--router",
                router.namespace,
                *(f"{self.vpc.subnets[s]}={i.name}" for s, i in on_segment.items()),
            ],
            "vpc-fabric.log",
            env,
        )
        self.kube.apply(CLOUD_ROUTES_MANIFEST)
        self._spawn_logged(
            "etcd",
            [
                *PLAINNET,
                "cloud-routes",
                "--kubeconfig",
                str(self.kube.kubeconfig("cloud-routes")),
                *self._cidr_args(),
                "--vpc-id",
                self.vpc.vpc_id,
                "--cluster-name",
                self.spec.name,
                "--endpoint-url",
                self.moto.endpoint,
                "--period",
                "2",
                "--metrics",
                "off",
            ],
            "cloud-routes.log",
            env,
        )
        from pyroute2 import IPRoute

        for node in self.nodes:
            host = self.lab.host(node)
            gateway = on_segment[host.interfaces[0].segment].ipv4.ip
            with IPRoute(netns=host.namespace) as ipr:
                for cidr in self.spec.cluster_cidrs:
                    ipr.route("replace", dst=cidr, gateway=str(gateway))

    def _spawn_logged(self, host: str, argv: list[str], log_name: str, env: dict) -> None:
        log = (self.directory / log_name).open("ab")
        self.lab.popen(host, argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()

    def stop_etcd(self) -> None:
        if self.etcd is not None:
            self.etcd.stop()

    def plainnet(self, node: str, *args: str) -> str:
        result = self.lab.run(node, [*PLAINNET, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise PlainnetError(
                f"plainnet {' '.join(args[:2])} on {node} failed: {result.stderr.strip()}"
            )
        return result.stdout

    def agent_command(self, node: str) -> list[str]:
        host = self.lab.host(node)
        addresses = sorted(host.addresses(), key=lambda a: a.version)
        if self.spec.underlay:
            addresses = [a for a in addresses if a.version == self.spec.underlay]
        node_ips = [arg for a in addresses for arg in ("--node-ip", str(a))]
        if self.spec.datastore == "kubernetes":
            datastore = [
                "--datastore",
                "kubernetes",
                "--kubeconfig",
                str(self.kube.kubeconfig("agent")),
                *self._cidr_args(),
                "--backend",
                self.spec.backend,
                *(["--network-policy"] if self.spec.network_policy else []),
            ]
        else:
            datastore = ["--etcd-endpoint", self.etcd_endpoint]
        return [
            *PLAINNET,
            "agent",
            *datastore,
            "--node-name",
            node,
            *node_ips,
            "--run-dir",
            str(self.run_dir(node)),
            "--lease-ttl",
            str(self.spec.lease_ttl),
            "--resync",
            str(self.spec.resync_seconds),
            "--metrics",
            "127.0.0.1:9158",
        ]

    def doctor_command(self, node: str, *options: str) -> list[str]:
        """``plainnet doctor`` on ``node`` with the agent's own sources: its run dir,
        metrics endpoint, the lab's CNI conf dir and datastore."""
        if self.spec.datastore == "kubernetes":
            kubeconfig = self.directory / "kube" / "agent.kubeconfig"
            if self.kube is not None:
                kubeconfig = self.kube.kubeconfig("agent")
            datastore = ["--kubeconfig", str(kubeconfig)]
        else:
            datastore = ["--etcd-endpoint", self.etcd_endpoint]
        return [
            *PLAINNET, "doctor", "--node-name", node, "--run-dir", str(self.run_dir(node)),
            "--agent", "127.0.0.1:9158", "--cni-conf-dir", str(self.cni_conf_dir),
            *datastore, *options,
        ]  # fmt: skip

    def doctor(self, node: str, *options: str) -> tuple[int, list[dict]]:
        """Run doctor on ``node``: (exit status, its findings)."""
        result = self.lab.run(
            node, self.doctor_command(node, "--json", *options), capture_output=True, text=True
        )
        if result.returncode not in (0, 1):
            raise PlainnetError(f"plainnet doctor on {node} failed: {result.stderr.strip()}")
        return result.returncode, json.loads(result.stdout)

    def start_agent(self, node: str) -> subprocess.Popen[Any]:
        self.run_dir(node).mkdir(parents=True, exist_ok=True)
        log = (self.directory / f"{node}.agent.log").open("ab")
        process = self.lab.popen(
            node, self.agent_command(node), stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        self.agents[node] = process
        return process

    def stop_agent(self, node: str, *, kill: bool = False) -> None:
        process = self.agents.pop(node, None)
        if process is None:
            pids = netns.pids_inside(self.lab.host(node).namespace)
            netns.stop_processes(pids)
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        process.wait(timeout=15)

    def metric(self, node: str, name: str) -> float:
        """A sample of the agent's /metrics on ``node``, summed over its labels."""
        script = (
            "import urllib.request;print(urllib.request.urlopen("
            "'http://127.0.0.1:9158/metrics').read().decode())"
        )
        text = self.lab.run(
            node, [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith((name + " ", name + "{"))
        )

    def agent_log(self, node: str) -> str:
        path = self.directory / f"{node}.agent.log"
        return path.read_text() if path.exists() else ""

    def refusals(self, node: str) -> list[str]:
        """The peer records the agent on ``node`` refused, as its log says (latest each)."""
        found: dict[str, str] = {}
        for line in self.agent_log(node).splitlines():
            _, marker, rest = line.partition("refused peer record of node ")
            if marker:
                found[rest.split(" ", 1)[0]] = rest
        return list(found.values())

    def wait_for_node_state(self, node: str, deadline: float) -> NodeState:
        while time.monotonic() < deadline:
            state = read_node_state(self.run_dir(node))
            if state is not None:
                return state
            process = self.agents.get(node)
            if process is not None and process.poll() is not None:
                raise PlainnetError(f"agent on {node} exited: {self.agent_log(node)[-500:]}")
            time.sleep(0.05)
        raise PlainnetError(
            f"agent on {node} published no subnet in time: {self.agent_log(node)[-500:]}"
        )

    def wait_for_cni(self, node: str, deadline: float) -> None:
        """Until the node's plugin answers STATUS (CNI 1.1) with success, as a runtime
        waits before it schedules pods on a node."""
        config = json.dumps({"cniVersion": "1.1.0", "name": "plainnet", "type": "plainnet"})
        env = {"CNI_COMMAND": "STATUS", "PATH": "/usr/bin:/bin"}
        while time.monotonic() < deadline:
            result = self.lab.run(
                node,
                [str(self.cni_bin_dir / "plainnet")],
                env=env,
                input=config.encode(),
                capture_output=True,
            )
            if result.returncode == 0:
                return
            time.sleep(0.05)
        raise PlainnetError(f"the CNI plugin on {node} is not ready: {self.agent_log(node)[-500:]}")

    def install_cni(self) -> None:
        """The plugin and conflist into the lab's own CNI directories (all lab nodes share
        this machine's filesystem; each finds its own agent through its namespace)."""
        install(self.cni_bin_dir, self.cni_conf_dir)

    @property
    def cni_bin_dir(self) -> Path:
        return self.directory / "cni" / "bin"

    @property
    def cni_conf_dir(self) -> Path:
        return self.directory / "cni" / "net.d"

    def runtime(self, node: str, conflist: Path | None = None) -> CniRuntime:
        return CniRuntime(
            conflist or self.cni_conf_dir / CONFLIST,
            [self.cni_bin_dir, REFERENCE_PLUGINS],
            self.directory / "cni" / "cache" / node,
            partial(self.lab.run, node),
        )

    def add_pod(
        self,
        node: str,
        pod: str,
        timeout: float = 10.0,
        runtime_config: dict[str, Any] | None = None,
        runtime: CniRuntime | None = None,
        kube_namespace: str = "default",
        labels: dict[str, str] | None = None,
        ports: list[PortSpec] | None = None,
        register: bool = True,
    ) -> Pod:
        """A pod namespace, plumbed by the CNI plugin exactly as a runtime calls it (through
        ``runtime``, by default the lab's own CNI directories). Like kubelet, retry while
        the plugin says "try again later" (code 11). With the Kubernetes datastore the
        pod is also a Pod object in ``kube_namespace`` (labels: ``labels``, default
        ``pod: <name>``; container ports ``ports``), as a kubelet reports it — unless
        ``register`` is False (the caller registers it later)."""
        runtime = runtime or self.runtime(node)
        namespace = f"{PREFIX}{self.spec.name}-{node}-{pod}"
        netns.create(namespace)
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = runtime.add(
                    namespace, str(netns.path_of(namespace)), runtime_config=runtime_config
                )
                break
            except CniCallError as failure:
                if failure.code != 11 or time.monotonic() > deadline:
                    raise PlainnetError(str(failure)) from None
                time.sleep(0.05)
        addresses = tuple(ip_interface(ip["address"]).ip for ip in result["ips"])
        created = Pod(f"{node}-{pod}", node, namespace, addresses, kube_namespace)
        if self.spec.datastore == "kubernetes" and register:
            if kube_namespace not in self._namespaces:
                kubelet.ensure_namespace(self.kube, kube_namespace)
                self._namespaces.add(kube_namespace)
            kubelet.register_pod(
                self.kube,
                kube_namespace,
                created.name,
                node,
                addresses,
                labels if labels is not None else {"pod": created.name},
                ports or [],
            )
        self.pods.append(created)
        return created

    def delete_pod(self, pod: Pod) -> None:
        if self.spec.datastore == "kubernetes":
            kubelet.unregister_pod(self.kube, pod.kube_namespace, pod.name)
        self.runtime(pod.node).delete(pod.namespace, str(netns.path_of(pod.namespace)))
        netns.remove(pod.namespace)
        self.pods.remove(pod)

    def node_routes(self, node: str, version: int = 4) -> dict[str, str]:
        """plainnet's routes on ``node`` as iproute2 shows them: destination -> gateway."""
        output = self.lab.run(
            node,
            ["ip", f"-{version}", "route", "show", "proto", "158"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        routes = {}
        for line in output.splitlines():
            words = line.split()
            if "via" in words:
                routes[words[0]] = words[words.index("via") + 1]
        return routes
