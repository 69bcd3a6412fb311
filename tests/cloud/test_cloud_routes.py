"""plainnet cloud-routes against a real EC2 API implementation (moto in server mode) and
the real kube-apiserver, run as an operator runs it: the process, its RBAC identity,
credentials from the SDK's environment chain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plainnet.lab.vpc import build_vpc
from plainnet.testing.etcd_server import EtcdServer
from plainnet.testing.kube_control_plane import KubeControlPlane
from plainnet.testing.moto_server import CREDENTIALS, MotoServer
from tests.helpers.cluster_checks import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.slow]

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "cloud" / "aws" / "cloud-routes.yaml"
NODES = 60


@pytest.fixture
def kube():
    with EtcdServer() as etcd, KubeControlPlane(etcd.endpoint) as control_plane:
        control_plane.apply(MANIFEST)
        yield control_plane


@pytest.fixture
def moto():
    with MotoServer() as server:
        yield server


class Controller:
    def __init__(self, kube, moto, vpc_id, tmp_path, route_limit):
        self.argv = [
            sys.executable,
            "-m",
            "plainnet.cli.main",
            "cloud-routes",
            "--kubeconfig",
            str(kube.kubeconfig("cloud-routes")),
            "--cluster-cidr",
            "10.244.0.0/16",
            "--vpc-id",
            vpc_id,
            "--cluster-name",
            "test",
            "--endpoint-url",
            moto.endpoint,
            "--route-limit",
            str(route_limit),
            "--period",
            "1",
            "--metrics",
            "off",
        ]
        self.log = tmp_path / "cloud-routes.log"
        self.process = None

    def start(self):
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **CREDENTIALS},
            )

    def kill(self):
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def own_routes(ec2, table):
    routes = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Routes"]
    return sorted(
        (r["DestinationCidrBlock"], r.get("InstanceId"))
        for r in routes
        if r.get("DestinationCidrBlock", "").startswith("10.244.")
    )


def foreign_routes(ec2, table):
    routes = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Routes"]
    return [r for r in routes if not r.get("DestinationCidrBlock", "").startswith("10.244.")]


def events(kube, reason):
    status, listing = kube.request("GET", "/api/v1/namespaces/default/events")
    assert status == 200
    return {e["involvedObject"]["name"] for e in listing["items"] if e["reason"] == reason}


def condition(kube, name):
    _, node = kube.request("GET", f"/api/v1/nodes/{name}")
    found = [c for c in node["status"].get("conditions", []) if c["type"] == "NetworkUnavailable"]
    return (found[0]["status"], found[0]["reason"]) if found else None


def test_routes_follow_nodes_within_the_limit_and_never_touch_foreign_ones(kube, moto, tmp_path):
    ec2 = moto.client()
    segments = [("a", "10.250.1.0/24"), ("b", "10.250.2.0/24")]
    nodes = [(f"n{i}", "ab"[i % 2], f"10.250.{1 + i % 2}.{10 + i}") for i in range(NODES)]
    vpc = build_vpc(ec2, "test", segments, nodes)
    tables = list(vpc.tables.values())
    # foreign: the default route (to the internet gateway, from build_vpc) and a route
    # into another cluster's range
    other = next(iter(vpc.instances.values()))
    ec2.create_route(RouteTableId=tables[0], DestinationCidrBlock="10.245.0.0/24", InstanceId=other)
    foreign = {t: foreign_routes(ec2, t) for t in tables}
    for i, (name, _, address) in enumerate(nodes):
        kube.create_node(name, [address], vpc.provider_ids[name])
        kube.request("PATCH", f"/api/v1/nodes/{name}", {"spec": {"podCIDR": f"10.244.{i}.0/24"}})
    bad = {
        "nopid": None,
        "gce": "gce://project/zone/vm",
        "broken": "aws:///zone/not-an-instance",
        "ghost": "aws:///us-east-1a/i-0123456789abcdef0",
    }
    for k, (name, provider_id) in enumerate(bad.items()):
        kube.create_node(name, [f"10.250.3.{k + 1}"], provider_id)
        kube.request(
            "PATCH", f"/api/v1/nodes/{name}", {"spec": {"podCIDR": f"10.244.{200 + k}.0/24"}}
        )
    # each table: the local route, the default route, the other cluster's (table 0), and
    # room for 50 node routes
    controller = Controller(kube, moto, vpc.vpc_id, tmp_path, route_limit=53)
    controller.start()
    try:
        # table 1 has one foreign route fewer, so room for one node route more
        wait_until(
            lambda: (
                len(own_routes(ec2, tables[1])) == 51 and len(events(kube, "RouteTableFull")) >= 10
            ),
            60,
            what="a full route table and its RouteTableFull events",
        )
        routed = own_routes(ec2, tables[0])
        assert len(routed) == 50, controller.log.read_text()[-2000:]
        # the ones left out (which: the planner's unit tests check the order)
        served = {destination for destination, _ in routed}
        waiting = {f"n{i}" for i in range(NODES) if f"10.244.{i}.0/24" not in served}
        assert len(waiting) == 10 and events(kube, "RouteTableFull") == waiting
        for reason, name in [
            ("NoProviderID", "nopid"),
            ("ForeignProviderID", "gce"),
            ("InvalidProviderID", "broken"),
            ("InstanceNotFound", "ghost"),
        ]:
            wait_until(lambda r=reason, n=name: n in events(kube, r), 10, what=reason)
        for table in tables:
            assert foreign_routes(ec2, table) == foreign[table]
        # source/destination check off on every node instance
        described = ec2.describe_instances(InstanceIds=list(vpc.instances.values()))
        checks = {i["SourceDestCheck"] for r in described["Reservations"] for i in r["Instances"]}
        assert checks == {False}
        wait_until(lambda: condition(kube, "n0") == ("False", "RouteCreated"), 10, what="condition")
        assert condition(kube, min(waiting)) == ("True", "NoRouteCreated")

        # a route deleted by hand comes back; a deleted node's route goes and frees room
        ec2.delete_route(RouteTableId=tables[0], DestinationCidrBlock="10.244.3.0/24")
        wait_until(
            lambda: ("10.244.3.0/24", vpc.instances["n3"]) in own_routes(ec2, tables[0]),
            10,
            what="the deleted route to come back",
        )
        assert kube.request("DELETE", "/api/v1/nodes/n5")[0] == 200
        wait_until(
            lambda: all(d != "10.244.5.0/24" for d, _ in own_routes(ec2, tables[0])),
            10,
            what="the deleted node's route to go",
        )
        first = min(waiting)
        wait_until(
            lambda: (
                (f"10.244.{first[1:]}.0/24", vpc.instances[first]) in own_routes(ec2, tables[0])
            ),
            10,
            what="the freed room to go to the first waiting node",
        )

        # restarted after kill -9: the same routes, none twice
        before = {t: own_routes(ec2, t) for t in tables}
        controller.kill()
        controller.start()
        time.sleep(4)
        assert {t: own_routes(ec2, t) for t in tables} == before
        assert "Traceback" not in controller.log.read_text()
    finally:
        controller.stop()


def test_an_unreachable_cloud_only_makes_it_wait(kube, moto, tmp_path):
    ec2 = moto.client()
    vpc = build_vpc(ec2, "test", [("a", "10.250.1.0/24")], [("n0", "a", "10.250.1.10")])
    kube.create_node("n0", ["10.250.1.10"], vpc.provider_ids["n0"])
    kube.request("PATCH", "/api/v1/nodes/n0", {"spec": {"podCIDR": "10.244.0.0/24"}})
    table = vpc.tables["a"]
    moto.stop()
    controller = Controller(kube, moto, vpc.vpc_id, tmp_path, route_limit=50)
    controller.start()
    try:
        time.sleep(3)
        assert controller.process.poll() is None
        assert "Unreachable" in controller.log.read_text()
        assert "Traceback" not in controller.log.read_text()
    finally:
        controller.stop()
    assert table  # moto's state is gone with it; what matters is the controller lived
