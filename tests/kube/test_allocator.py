"""plainnet allocator against a real kube-apiserver, with the allocator's own RBAC
identity: distinct subnets for 1,000 nodes created at once, restarts keep every
assignment, two replicas never double-assign, exhaustion and bad podCIDRs reported."""

import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network

import pytest

from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import RBAC_MANIFEST, KubeControlPlane

pytestmark = [pytest.mark.root, pytest.mark.kube]


@pytest.fixture
def api():
    with EtcdServer() as etcd, KubeControlPlane(etcd.endpoint) as kube:
        kube.apply(RBAC_MANIFEST)
        yield kube


def start_allocator(kube, cidr="10.0.0.0/8", identity="a"):
    """The allocator as a process; its log goes to a file (a pipe nobody reads while it
    runs would fill up and block it)."""
    log = tempfile.NamedTemporaryFile("w+", prefix="pn-allocator-", suffix=".log")  # noqa: SIM115 - closed in stop()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plainnet.cli.main",
            "allocator",
            "--kubeconfig",
            str(kube.kubeconfig("allocator")),
            "--cluster-cidr",
            cidr,
            "--identity",
            identity,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.log = log
    return process


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.log.seek(0)
    text = process.log.read()
    process.log.close()
    return text


def create_nodes(kube, names):
    def create(name):
        status, reply = kube.request(
            "POST",
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}},
        )
        assert status == 201, reply

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, names))


def pod_cidrs(kube):
    status, listing = kube.request("GET", "/api/v1/nodes")
    assert status == 200
    return {n["metadata"]["name"]: n.get("spec", {}).get("podCIDR") for n in listing["items"]}


def wait_assigned(kube, count, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cidrs = pod_cidrs(kube)
        if sum(1 for c in cidrs.values() if c) >= count:
            return cidrs
        time.sleep(0.2)
    raise AssertionError(
        f"only {sum(1 for c in pod_cidrs(kube).values() if c)} of {count} "
        f"nodes got a podCIDR within {timeout}s"
    )


def test_a_thousand_nodes_get_distinct_subnets_and_a_restart_keeps_them(api):
    allocator = start_allocator(api)
    try:
        create_nodes(api, [f"n{i}" for i in range(1000)])
        started = time.monotonic()
        before = wait_assigned(api, 1000, 60)
        elapsed = time.monotonic() - started
    finally:
        log = stop(allocator)
    assert len(set(before.values())) == 1000, "a subnet was handed out twice"
    assert all(ip_network(c).subnet_of(ip_network("10.0.0.0/8")) for c in before.values())
    print(f"1000 nodes assigned {elapsed:.2f}s after the last was created")
    restarted = start_allocator(api, identity="b")
    try:
        create_nodes(api, ["late"])
        after = wait_assigned(api, 1001, 30)
    finally:
        stop(restarted)
    assert {k: v for k, v in after.items() if k != "late"} == before, log[-500:]
    assert after["late"] not in before.values()


def test_two_replicas_never_double_assign(api):
    replicas = [start_allocator(api, identity=f"r{i}") for i in range(2)]
    try:
        create_nodes(api, [f"m{i}" for i in range(200)])
        cidrs = wait_assigned(api, 200, 30)
    finally:
        logs = [stop(r) for r in replicas]
    assert len(set(cidrs.values())) == 200
    assert sum("leading as" in log for log in logs) == 1


def test_exhaustion_and_bad_pod_cidrs_are_reported(api):
    status, _ = api.request(
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "odd"},
            "spec": {"podCIDR": "192.168.0.0/24", "podCIDRs": ["192.168.0.0/24"]},
        },
    )
    assert status == 201
    allocator = start_allocator(api, cidr="10.9.0.0/23")  # two /24s
    try:
        create_nodes(api, ["e1", "e2", "e3"])
        cidrs = wait_assigned(api, 3, 30)  # "odd" plus two of the three
        time.sleep(1)
        status, events = api.request("GET", "/api/v1/namespaces/default/events")
    finally:
        stop(allocator)
    assert sum(1 for name in ("e1", "e2", "e3") if cidrs.get(name)) == 2
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events["items"]}
    starved = next(name for name in ("e1", "e2", "e3") if not cidrs.get(name))
    assert (starved, "CIDRNotAvailable") in reasons
    assert ("odd", "InvalidPodCIDR") in reasons
    assert cidrs["odd"] == "192.168.0.0/24"  # reported, never reassigned


def test_dual_stack_nodes_get_one_subnet_per_family_ipv4_first():
    """Kubernetes v1.20 accepts two podCIDRs behind the IPv6DualStack feature gate."""
    with (
        EtcdServer() as etcd,
        KubeControlPlane(
            etcd.endpoint,
            extra_args=(
                "--feature-gates=IPv6DualStack=true",
                "--service-cluster-ip-range=10.96.0.0/16,fd00:96::/112",
            ),
        ) as kube,
    ):
        kube.apply(RBAC_MANIFEST)
        allocator = start_allocator(kube, cidr="10.0.0.0/16,fd00:10::/48")
        try:
            create_nodes(kube, [f"d{i}" for i in range(20)])
            wait_assigned(kube, 20, 30)
            status, listing = kube.request("GET", "/api/v1/nodes")
        finally:
            log = stop(allocator)
        assert status == 200
        pairs = [n["spec"]["podCIDRs"] for n in listing["items"]]
        assert all(len(p) == 2 for p in pairs), log[-500:]
        assert all(ip_network(p[0]).version == 4 and ip_network(p[1]).version == 6 for p in pairs)
        assert len({p[1] for p in pairs}) == 20
