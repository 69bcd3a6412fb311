"""The cloud scenario end to end in the lab (``plainnet lab up --topology cloud``): nodes
on two subnets of an emulated VPC, whose router follows moto's route tables; the routes
in those tables are written by ``plainnet cloud-routes`` alone. Pods reach each other
with no tunnel and no peer route on any node — the VPC's route table carries them."""

import pytest

from plainnet.lab.reachability import probe_pods
from plainnet.node_state import read_node_state
from tests.helpers.advise import advise_on
from tests.helpers.cluster_checks import wait_until

pytestmark = [pytest.mark.root, pytest.mark.kube]


def cluster_routes(cluster, table):
    """The table's routes into the cluster CIDR: destination -> instance."""
    described = cluster.ec2().describe_route_tables(RouteTableIds=[table])["RouteTables"][0]
    return {
        r["DestinationCidrBlock"]: r.get("InstanceId")
        for r in described["Routes"]
        if r.get("DestinationCidrBlock", "").startswith("10.244.")
    }


def all_pods_reach_each_other(cluster):
    probes = probe_pods(cluster.pods)
    return bool(probes) and all(p.ok for p in probes)


def test_pods_on_two_vpc_subnets_talk_through_the_vpc_route_tables(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=4, pods_per_node=1, topology="cloud")
    vpc = cluster.vpc
    subnets = {n: str(read_node_state(cluster.run_dir(n)).subnets[0]) for n in cluster.nodes}
    expected = {subnets[n]: vpc.instances[n] for n in cluster.nodes}
    for table in vpc.tables.values():
        wait_until(lambda t=table: cluster_routes(cluster, t) == expected, 30, what="every route")
    wait_until(lambda: all_pods_reach_each_other(cluster), 20, what="all-pairs connectivity")
    segments = {cluster.lab.host(n).interfaces[0].segment for n in cluster.nodes}
    assert len(segments) == 2  # nodes on different subnets of the VPC
    advice = advise_on(cluster, "node1")  # the Nodes' providerIDs name the cloud
    assert (advice["situation"], advice["backend"]) == ("cloud-vpc", "cloud")
    advice = advise_on(cluster, "node1", "--route-table-limit", "3")
    assert (advice["situation"], advice["backend"]) == ("cloud-vpc", "auto")
    for node in cluster.nodes:  # no tunnel, no peer routes: the VPC routes
        assert cluster.node_routes(node) == {}
        links = cluster.lab.run(node, ["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "vxlan" not in links

    # a route deleted by hand in the cloud comes back, and with it the traffic
    table = vpc.tables[cluster.lab.host("node1").interfaces[0].segment]
    cluster.ec2().delete_route(RouteTableId=table, DestinationCidrBlock=subnets["node2"])
    wait_until(
        lambda: cluster_routes(cluster, table) == expected, 15, what="the route to come back"
    )
    wait_until(lambda: all_pods_reach_each_other(cluster), 20, what="connectivity again")

    # a deleted node's route goes from every table
    assert cluster.kube.request("DELETE", "/api/v1/nodes/node4")[0] == 200
    del expected[subnets["node4"]]
    for table in vpc.tables.values():
        wait_until(
            lambda t=table: cluster_routes(cluster, t) == expected, 15, what="node4's route gone"
        )
