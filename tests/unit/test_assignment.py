"""The allocator's planning: pure, no API server."""

from ipaddress import ip_network

from plainnet.allocator.assignment import NodeFacts, plan_assignments
from plainnet.ipam.node_subnets import NodeSubnetAllocator


def allocator(cidr="10.244.0.0/22", mask=24):
    return NodeSubnetAllocator([ip_network(cidr)], {4: mask})


def test_new_nodes_get_free_subnets_and_existing_ones_keep_theirs():
    nodes = [NodeFacts("a", ("10.244.0.0/24",), 1), NodeFacts("b", (), 2), NodeFacts("c", (), 3)]
    plan = plan_assignments(nodes, allocator())
    assert [(a.node, str(a.subnets[0])) for a in plan.assignments] == [
        ("b", "10.244.1.0/24"),
        ("c", "10.244.2.0/24"),
    ]
    assert plan.problems == []


def test_out_of_range_and_duplicate_cidrs_are_reported_not_reassigned():
    nodes = [
        NodeFacts("old", ("10.244.1.0/24",), 1),
        NodeFacts("dup", ("10.244.1.0/24",), 2),
        NodeFacts("far", ("192.168.0.0/24",), 3),
    ]
    plan = plan_assignments(nodes, allocator())
    assert plan.assignments == []
    assert {(p.node, p.reason) for p in plan.problems} == {
        ("dup", "InvalidPodCIDR"),
        ("far", "InvalidPodCIDR"),
    }


def test_exhaustion_is_reported_and_the_others_are_still_served():
    nodes = [NodeFacts(f"n{i}", (), i) for i in range(6)]
    plan = plan_assignments(nodes, allocator())
    assert len(plan.assignments) == 4
    assert [(p.node, p.reason) for p in plan.problems] == [
        ("n4", "CIDRNotAvailable"),
        ("n5", "CIDRNotAvailable"),
    ]


def test_a_deleted_nodes_subnet_is_free_for_the_next_node():
    pool = allocator("10.244.0.0/23")  # two /24s
    first = plan_assignments([NodeFacts("a", (), 1), NodeFacts("b", (), 2)], pool)
    assert len(first.assignments) == 2
    held = {a.node: str(a.subnets[0]) for a in first.assignments}
    # "a" was deleted; a full pass plans from the Nodes that exist: its subnet is free
    survivors = [NodeFacts("b", (held["b"],), 2), NodeFacts("c", (), 3)]
    second = plan_assignments(survivors, allocator("10.244.0.0/23"))
    assert [(x.node, str(x.subnets[0])) for x in second.assignments] == [("c", held["a"])]


def test_a_node_with_only_spec_pod_cidr_is_a_peer():
    from datetime import UTC, datetime

    from lightkube.models.core_v1 import NodeAddress, NodeSpec, NodeStatus
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Node

    from plainnet.datastore.kubernetes import node_record
    from plainnet.datastore.records import PeerRecord

    node = Node(
        metadata=ObjectMeta(name="old", creationTimestamp=datetime.now(UTC)),
        spec=NodeSpec(podCIDR="10.244.7.0/24"),
        status=NodeStatus(addresses=[NodeAddress(type="InternalIP", address="10.250.0.7")]),
    )
    record = node_record(node, "host-gw")
    assert isinstance(record, PeerRecord)
    assert [str(s) for s in record.subnets] == ["10.244.7.0/24"]
