"""Lab topology validation and planning: pure, no root needed."""

from ipaddress import ip_address, ip_network

import pytest
from pydantic import ValidationError

from plainnet.lab.topology import (
    Host,
    Router,
    Segment,
    Topology,
    lab_of_namespace,
    plan,
    single_segment,
    two_segments,
)


def test_single_segment_plan_names_and_addresses():
    lab = plan(single_segment("demo", 3))
    assert lab.fabric_namespace == "pn-demo"
    assert [h.namespace for h in lab.hosts] == ["pn-demo-host1", "pn-demo-host2", "pn-demo-host3"]
    assert [str(h.ipv4) for h in lab.hosts] == ["10.250.0.1", "10.250.0.2", "10.250.0.3"]
    assert all(h.routes == () for h in lab.hosts), "one segment needs no routes"
    interface = lab.hosts[0].interfaces[0]
    assert (interface.name, interface.port, interface.bridge) == ("eth0", "host1.0", "br-lan")


def test_every_name_fits_the_kernel_limit():
    lab = plan(
        Topology(
            name="abcdefghij",
            segments=[
                Segment(name="abcdefghijkl", ipv4=ip_network("10.0.0.0/24")),
                Segment(name="x", ipv4=ip_network("10.0.1.0/24")),
            ],
            routers=[Router(name="r23456789012", segments=["abcdefghijkl", "x"])],
            hosts=[Host(name="h23456789012", segment="x")],
        )
    )
    for host in lab.hosts:
        for interface in host.interfaces:
            assert len(interface.port) <= 15
            assert len(interface.bridge) <= 15


def test_two_segments_route_through_the_router_and_nowhere_else():
    lab = plan(two_segments("demo", 4))
    router = lab.host("router")
    assert router.forwarding
    assert [str(i.ipv4.ip) for i in router.interfaces] == ["10.250.1.1", "10.250.2.1"]
    host1 = lab.host("host1")
    assert [(str(r.destination), str(r.gateway)) for r in host1.routes] == [
        ("10.250.2.0/24", "10.250.1.1"),
        ("fd00:250:2::/64", "fd00:250:1::1"),
    ]
    for host in lab.hosts:
        for route in host.routes:
            assert route.destination.prefixlen > 0, "no default route: a lab never routes out"


def test_routes_across_a_chain_of_routers_use_the_first_hop():
    topology = Topology(
        name="chain",
        segments=[Segment(name=n, ipv4=ip_network(f"10.0.{i}.0/24")) for i, n in enumerate("abc")],
        routers=[Router(name="r1", segments=["a", "b"]), Router(name="r2", segments=["b", "c"])],
        hosts=[Host(name="left", segment="a"), Host(name="right", segment="c")],
    )
    lab = plan(topology)
    left = {str(r.destination): str(r.gateway) for r in lab.host("left").routes}
    assert left == {"10.0.1.0/24": "10.0.0.1", "10.0.2.0/24": "10.0.0.1"}
    r1 = {str(r.destination): str(r.gateway) for r in lab.host("r1").routes}
    assert r1 == {"10.0.2.0/24": "10.0.1.2"}  # r2's address on segment b


def test_explicit_addresses_are_kept_and_skipped_by_auto_assignment():
    lab = plan(
        Topology(
            name="x",
            segments=[Segment(name="lan", ipv4=ip_network("10.0.0.0/24"))],
            hosts=[Host(name="a", segment="lan"), Host(name="b", segment="lan", ipv4="10.0.0.1")],
        )
    )
    assert lab.host("b").ipv4 == ip_address("10.0.0.1")
    assert lab.host("a").ipv4 == ip_address("10.0.0.2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad-Name"}, "lab name"),
        ({"hosts": [{"name": "a", "segment": "nope"}]}, "unknown segment 'nope'"),
        (
            {"hosts": [{"name": "a", "segment": "lan"}, {"name": "a", "segment": "lan"}]},
            "used twice",
        ),
        ({"hosts": [{"name": "a", "segment": "lan", "ipv4": "10.9.0.1"}]}, "not usable"),
        ({"hosts": [{"name": "averyveryverylongname", "segment": "lan"}]}, "host name"),
    ],
)
def test_invalid_topologies_are_refused(change, message):
    values = {"name": "x", "segments": [{"name": "lan", "ipv4": "10.0.0.0/24"}]} | change
    with pytest.raises(ValidationError, match=message):
        Topology.model_validate(values)


def test_a_full_segment_is_refused():
    with pytest.raises(ValidationError, match="no address left"):
        Topology(
            name="x",
            segments=[Segment(name="lan", ipv4=ip_network("10.0.0.0/30"))],
            hosts=[Host(name=f"h{i}", segment="lan") for i in range(3)],
        )


@pytest.mark.parametrize(
    ("namespace", "lab"),
    [
        ("pn-demo", "demo"),
        ("pn-demo-host1", "demo"),
        ("pn-demo-node-1", "demo"),
        ("other", None),
        ("pn-", None),
    ],
)
def test_lab_of_namespace(namespace, lab):
    assert lab_of_namespace(namespace) == lab
