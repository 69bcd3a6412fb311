"""The cloud-routes planner: desired routes, ownership, limits and bad input. Pure."""

from ipaddress import ip_network

from plainnet.cloud.plan import (
    CloudState,
    Instance,
    NodeFacts,
    Route,
    RouteTable,
    parse_provider_id,
    plan_routes,
)

CLUSTER = [ip_network("10.244.0.0/16")]


def node(i: int, provider_id: str | None = None, cidr: str | None = None) -> NodeFacts:
    return NodeFacts(
        f"node{i}",
        f"uid{i}",
        provider_id if provider_id is not None else f"aws:///us-east-1a/i-{i:08x}",
        (cidr or f"10.244.{i}.0/24",),
        created=float(i),
    )


def instances(n: int, check: bool = True) -> dict[str, Instance]:
    return {f"i-{i:08x}": Instance(f"i-{i:08x}", f"eni-{i:08x}", check) for i in range(n)}


LOCAL = Route(ip_network("10.250.0.0/16"), origin="CreateRouteTable")
DEFAULT = Route(ip_network("0.0.0.0/0"), origin="CreateRoute")  # -> an internet gateway
OTHER_CLUSTER = Route(ip_network("10.245.3.0/24"), instance="i-ffffffff")


def test_one_route_per_pod_subnet_in_every_table_and_foreign_routes_untouched():
    tables = (RouteTable("rtb-a", (LOCAL, DEFAULT, OTHER_CLUSTER)), RouteTable("rtb-b", (LOCAL,)))
    plan = plan_routes([node(1), node(2)], CloudState(tables, instances(3)), CLUSTER)
    creates = {(c.table, str(c.destination), c.target) for c in plan.changes}
    assert creates == {
        (t, f"10.244.{i}.0/24", f"i-{i:08x}") for t in ("rtb-a", "rtb-b") for i in (1, 2)
    }
    assert all(c.operation == "create" for c in plan.changes)
    assert plan.routed == {"node1", "node2"}
    assert plan.source_dest_check == ["i-00000001", "i-00000002"]


def test_routes_to_gone_nodes_blackholes_and_wrong_targets_are_mended():
    stale = Route(ip_network("10.244.9.0/24"), instance="i-00000009")  # node deleted
    hole = Route(ip_network("10.244.1.0/24"), instance="i-00000001", state="blackhole")
    moved = Route(ip_network("10.244.2.0/24"), instance="i-00000007")  # node replaced
    table = RouteTable("rtb-a", (LOCAL, DEFAULT, OTHER_CLUSTER, stale, hole, moved))
    plan = plan_routes([node(1), node(2)], CloudState((table,), instances(3, False)), CLUSTER)
    changes = {(c.operation, str(c.destination)) for c in plan.changes}
    assert changes == {
        ("delete", "10.244.9.0/24"),
        ("replace", "10.244.1.0/24"),
        ("replace", "10.244.2.0/24"),
    }
    assert plan.source_dest_check == []  # already off


def test_a_full_table_serves_the_oldest_nodes_and_names_the_rest():
    nodes = [node(i) for i in range(60)]
    plan = plan_routes(
        nodes,
        CloudState((RouteTable("rtb-a", (LOCAL,)),), instances(60)),
        CLUSTER,
        default_limit=50,
    )
    creates = [c for c in plan.changes if c.operation == "create"]
    assert len(creates) == 49  # the local route takes one of the 50
    full = [p for p in plan.problems if p.reason == "RouteTableFull"]
    assert sorted(p.node for p in full) == sorted(f"node{i}" for i in range(49, 60))
    assert {c.node for c in creates} == {f"node{i}" for i in range(49)}
    # a table the API called full at 30 routes takes no more
    learned = plan_routes(
        nodes,
        CloudState((RouteTable("rtb-a", (LOCAL,)),), instances(60)),
        CLUSTER,
        limits={"rtb-a": 30},
    )
    assert len([c for c in learned.changes if c.operation == "create"]) == 29


def test_bad_nodes_are_named_and_the_rest_served():
    nodes = [
        node(1),
        node(2, provider_id=""),
        node(3, provider_id="gce://project/zone/vm"),
        node(4, provider_id="aws:///us-east-1a/i-zzz\n"),
        node(5),  # instance not in the VPC
        node(6, cidr="10.99.0.0/24"),
        node(7, cidr="not a network\x00"),
        node(8, cidr="10.244.1.0/24"),  # node1's too
    ]
    known = instances(9)
    del known["i-00000005"]
    plan = plan_routes(nodes, CloudState((RouteTable("rtb-a", (LOCAL,)),), known), CLUSTER)
    reasons = {p.node: p.reason for p in plan.problems}
    assert reasons == {
        "node2": "NoProviderID",
        "node3": "ForeignProviderID",
        "node4": "InvalidProviderID",
        "node5": "InstanceNotFound",
        "node6": "PodCIDROutsideCluster",
        "node7": "InvalidPodCIDR",
        "node8": "DuplicatePodCIDR",
    }
    assert "\x00" not in next(p.message for p in plan.problems if p.node == "node7")
    assert plan.routed == {"node1"}
    assert [str(c.destination) for c in plan.changes] == ["10.244.1.0/24"]


def test_provider_ids():
    assert parse_provider_id("aws:///eu-west-1b/i-0123456789abcdef0") == (
        "i-0123456789abcdef0",
        None,
    )
    assert parse_provider_id("aws://eu-west-1b/i-0123456789abcdef0")[0] == "i-0123456789abcdef0"
    assert parse_provider_id(None) == (None, "NoProviderID")
    assert parse_provider_id("aws:///zone/i-0123/../x") == (None, "InvalidProviderID")


def test_ipv6_pod_subnets_get_ipv6_routes():
    cluster = [*CLUSTER, ip_network("fd00:10:244::/56")]
    dual = NodeFacts("n", "u", "aws:///z/i-00000001", ("10.244.1.0/24", "fd00:10:244:1::/64"))
    plan = plan_routes([dual], CloudState((RouteTable("rtb-a", ()),), instances(2)), cluster)
    assert {c.destination.version for c in plan.changes} == {4, 6}
