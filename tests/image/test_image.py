"""The image, built by scripts/build-image.sh, run with the manifests' own settings.

Every container runs as deploy/*.yaml says — command, args, env, capabilities, user,
mounts, hostNetwork — translated by :mod:`plainnet.testing.podman` the way kubelet would
apply them, against the lab's real kube-apiserver: the allocator on the control-plane
host, the install init container and the agent on each lab node (the node's namespace
stands for the host network, a directory per node for its filesystem). Pods are made
through the plugin the init container installed, as a runtime would call it.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from plainnet.lab import netns
from plainnet.lab.cni_runtime import CniRuntime
from plainnet.lab.reachability import probe_pods
from plainnet.testing.podman import PodContext, Podman, run_arguments, write_service_account

pytestmark = [pytest.mark.root, pytest.mark.kube, pytest.mark.slow, pytest.mark.image]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BUILD = ROOT / "scripts" / "build-image.sh"
CACHE = Path("/var/cache/plainnet")


def documents() -> dict[tuple[str, str], dict]:
    return {
        (d["kind"], d["metadata"]["name"]): d
        for path in sorted(DEPLOY.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
    }


def script(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(BUILD), *args], capture_output=True, text=True, timeout=1500
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image() -> tuple[str, list[str]]:
    """(name, podman run flags): built once per test run (podman caches the layers)."""
    script()
    return script("--image-name"), script("--run-flags").split()


@pytest.fixture
def podman(image):
    runner = Podman(image[1])
    yield runner
    runner.remove()


def http_get(namespace: str, path: str, port: int = 9158) -> tuple[int, str]:
    sock = netns.socket_in(namespace)
    sock.settimeout(3)
    sock.connect(("127.0.0.1", port))
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.sock = sock
    connection.request("GET", path)
    reply = connection.getresponse()
    return reply.status, reply.read().decode()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sysctl(cluster, node: str, key: str, value: str | None = None) -> str:
    if value is not None:
        netns.write_sysctls(cluster.lab.host(node).namespace, {key: value})
    return cluster.lab.run(
        node, ["cat", f"/proc/sys/{key}"], capture_output=True, text=True
    ).stdout.strip()


class Deployment:
    """The lab cluster and what kubelet would give each of the manifests' pods."""

    def __init__(self, cluster, podman: Podman, image: str) -> None:
        self.cluster = cluster
        self.podman = podman
        self.image = image
        self.manifests = documents()
        config = self.manifests[("ConfigMap", "plainnet-config")]
        self.config_maps = {"plainnet-config": config["data"]}
        kube = cluster.kube
        self.accounts = {
            name: write_service_account(
                cluster.directory / f"serviceaccount-{name}",
                kube.tokens[name],
                kube.ca_file,
                "kube-system",
            )
            for name in ("agent", "allocator")
        }

    def host_root(self, node: str) -> Path:
        return self.cluster.directory / node / "host"

    def host_path(self, node: str, path: str) -> Path:
        if path == "/var/run/netns":
            return Path(path)  # the lab's pod namespaces are there
        if path == "/run/plainnet":
            return self.cluster.run_dir(node)
        return self.host_root(node) / path.lstrip("/")

    def context(self, host: str, pod_name: str, account: str) -> PodContext:
        return PodContext(
            node_name=host,
            pod_name=pod_name,
            namespace="kube-system",
            config_maps=self.config_maps,
            host_path=partial(self.host_path, host),
            host_network=netns.path_of(self.cluster.lab.host(host).namespace),
            service_account=self.accounts[account],
            api_server=(str(self.cluster.lab.host("etcd").ipv4), 6443),
        )

    def container_name(self, host: str, container: str) -> str:
        return f"pn-{self.cluster.spec.name}-{host}-{container}"

    def run(self, kind: str, name: str, container: str, host: str, account: str, **how):
        pod = self.manifests[(kind, name)]["spec"]["template"]["spec"]
        spec = next(
            c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == container
        )
        arguments = run_arguments(
            pod, spec, self.image, self.context(host, f"{name}-{host}", account)
        )
        return self.podman.run(self.container_name(host, container), arguments, **how)

    def runtime(self, node: str) -> CniRuntime:
        """The container runtime on ``node``: only the installed bin dir on its path."""
        host = self.host_root(node)
        return CniRuntime(
            host / "etc/cni/net.d/10-plainnet.conflist",
            [host / "opt/cni/bin"],
            self.cluster.directory / "cni-cache" / node,
            partial(self.cluster.lab.run, node),
        )


@pytest.fixture
def deployment(cluster_factory, lab_name, podman, image):
    config = documents()[("ConfigMap", "plainnet-config")]["data"]
    cluster = cluster_factory(
        lab_name,
        nodes=2,
        datastore="kubernetes",
        allocator="none",
        agents=False,
        cluster_cidrs=[config["clusterCIDRs"]],
    )
    return Deployment(cluster, podman, image[0])


def pod_cidrs(cluster) -> dict[str, str | None]:
    status, nodes = cluster.kube.request("GET", "/api/v1/nodes")
    assert status == 200
    return {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in nodes["items"]}


def test_the_image_runs_the_cluster_network_with_the_manifests_settings(deployment):
    cluster, podman = deployment.cluster, deployment.podman
    # the allocator first: on the control-plane host's network, it needs no pod network
    deployment.run(
        "Deployment", "plainnet-allocator", "allocator", "etcd", "allocator", detach=True
    )
    wait_until(lambda: all(pod_cidrs(cluster).values()), 60, "the allocator's podCIDRs")

    for node in cluster.nodes:
        sysctl(cluster, node, "net/ipv4/ip_forward", "0")
        deployment.run("DaemonSet", "plainnet-agent", "install", node, "agent", detach=False)
        host = deployment.host_root(node)
        conflist = json.loads((host / "etc/cni/net.d/10-plainnet.conflist").read_text())
        assert [p["type"] for p in conflist["plugins"]] == ["plainnet", "portmap"]
        plugins = sorted(p.name for p in (host / "opt/cni/bin").iterdir() if p.name[0] != ".")
        assert plugins == ["plainnet", "portmap"]
        assert sysctl(cluster, node, "net/ipv4/ip_forward") == "1"  # the init container's
        deployment.run("DaemonSet", "plainnet-agent", "agent", node, "agent", detach=True)

    deadline = time.monotonic() + 60
    for node in cluster.nodes:
        state = cluster.wait_for_node_state(node, deadline)
        assert str(state.subnets[0]) == pod_cidrs(cluster)[node]
        wait_until(
            lambda n=node: http_get(cluster.lab.host(n).namespace, "/readyz")[0] == 200,
            60,
            f"{node}'s agent to be ready",
        )
    pods = [
        cluster.add_pod(node, f"p{k}", runtime=deployment.runtime(node))
        for node in cluster.nodes
        for k in (1, 2)
    ]
    assert all(p.ok for p in probe_pods(pods))

    # the agent container restarts (no --node-ip: it finds its address again)
    node1 = cluster.lab.host("node1").namespace
    podman("restart", "--time=10", deployment.container_name("node1", "agent"))
    wait_until(lambda: http_get(node1, "/readyz")[0] == 200, 60, "the restarted agent")
    pods.append(cluster.add_pod("node1", "p3", runtime=deployment.runtime("node1")))
    assert all(p.ok for p in probe_pods(pods))

    # killed with -9: routes stay and pods keep talking
    routes = cluster.node_routes("node2")
    podman("kill", "--signal=KILL", deployment.container_name("node2", "agent"))
    time.sleep(1)
    assert cluster.node_routes("node2") == routes and routes
    assert all(p.ok for p in probe_pods(pods))


def test_an_agent_restarted_with_forwarding_off_says_so_and_keeps_running(deployment):
    """The init container does not run again when only the agent container restarts:
    the unprivileged agent cannot write /proc/sys, so it must report, not crash."""
    cluster = deployment.cluster
    deployment.run("DaemonSet", "plainnet-agent", "install", "node1", "agent", detach=False)
    sysctl(cluster, "node1", "net/ipv4/ip_forward", "0")  # e.g. reset by someone
    deployment.run("DaemonSet", "plainnet-agent", "agent", "node1", "agent", detach=True)
    namespace = cluster.lab.host("node1").namespace
    # no podCIDR yet: alive (the liveness probe must not kill it), not ready
    wait_until(lambda: http_get(namespace, "/healthz")[0] == 200, 30, "/healthz")
    status, text = http_get(namespace, "/readyz")
    assert status == 503 and "waiting for the datastore and this node's subnet" in text
    cluster.kube.start_controller_manager(cluster.spec.cluster_cidrs[0], 24)
    cluster.wait_for_node_state("node1", time.monotonic() + 60)

    def reason():
        status, text = http_get(namespace, "/readyz")
        return status == 503 and "net.ipv4.ip_forward is off" in text

    wait_until(reason, 60, "/readyz to name the forwarding problem")
    assert http_get(namespace, "/healthz")[0] == 200
    logs = deployment.podman("logs", deployment.container_name("node1", "agent"))
    assert "Traceback" not in logs
    sysctl(cluster, "node1", "net/ipv4/ip_forward", "1")
    wait_until(lambda: http_get(namespace, "/readyz")[0] == 200, 30, "readiness once it is on")


def test_a_bare_run_of_the_image_prints_the_usage(podman, image):
    output = podman.run("pn-image-bare", ["--network=none", image[0]], detach=False)
    assert "Usage: plainnet" in output


# --- the shim on a node with an older C library -------------------------------------------


def mirror() -> str:
    targets = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(SITE) $(TARGET_OF)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return next(t.split()[0] for t in targets if t.endswith(" deb") and "security" not in t)


@pytest.fixture(scope="module")
def bullseye_root() -> Path:
    """A Debian 11 root (glibc 2.31), made once per machine with debootstrap."""
    root = CACHE / "rootfs-bullseye"
    if not (root / "usr/bin/env").exists():
        shutil.rmtree(root, ignore_errors=True)
        partial_root = root.with_name(root.name + ".partial")
        shutil.rmtree(partial_root, ignore_errors=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bullseye", str(partial_root), mirror()],
            check=True,
            capture_output=True,
            timeout=900,
        )
        partial_root.rename(root)
    return root


def run_in_root(root: Path, executable: Path) -> subprocess.CompletedProcess[str]:
    target = root / "tmp" / "plainnet"
    shutil.copy(executable, target)
    try:
        return subprocess.run(
            ["/usr/sbin/chroot", str(root), "/tmp/plainnet"],
            env={"CNI_COMMAND": "VERSION"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        target.unlink()


def test_the_installed_shim_runs_on_a_node_with_an_older_c_library(
    bullseye_root, podman, image, tmp_path
):
    podman.run(
        "pn-image-install",
        [
            "--volume",
            f"{tmp_path}:/host:rw",
            "--network=none",
            "--entrypoint=plainnet",
            image[0],
            "cni",
            "install",
            "--bin-dir",
            "/host/bin",
            "--conf-dir",
            "/host/net.d",
        ],
        detach=False,
    )
    answer = run_in_root(bullseye_root, tmp_path / "bin" / "plainnet")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["supportedVersions"] == ["1.0.0", "1.1.0"]
    # the control: the same source linked dynamically against this machine's glibc 2.36
    dynamic = tmp_path / "dynamic"
    from plainnet.cni.install import SHIM_SOURCE
    from plainnet.cni.protocol import shim_defines

    subprocess.run(
        ["gcc", "-O2", *shim_defines(), "-o", str(dynamic), str(SHIM_SOURCE)], check=True
    )
    refused = run_in_root(bullseye_root, dynamic)
    assert refused.returncode != 0 and "GLIBC_2.3" in refused.stderr
