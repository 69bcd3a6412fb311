"""``plainnet advise``: the selection guide's decision, row by row and at its edges, the
description file read as hostile input, and Node objects read as the live adapter
reads them — pure, no cluster (the live adapter on real labs: tests/advise/)."""

import time
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Node

from plainnet.advise.decide import decide, segments
from plainnet.advise.facts import DescriptionError, Facts, NodeFacts, from_description
from plainnet.advise.inspect import facts_from_nodes, parse_nodes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "advise"


def node(name: str, address: str, site: str | None = None) -> NodeFacts:
    interface = ip_interface(address)
    return NodeFacts(name, (interface.ip,), (interface.network,), site=site)


def on(*addresses: str, **settings) -> Facts:
    return Facts(tuple(node(f"n{i}", a) for i, a in enumerate(addresses)), **settings)


def many(count: int, network: str = "10.0.0.0/16") -> list[str]:
    base = ip_network(network)
    return [f"{base.network_address + 10 + i}/{base.prefixlen}" for i in range(count)]


CLOUD = {"cloud": "aws"}
# (what, facts, situation, backend, add-ons)
ROWS = [
    ("one server", on("10.0.0.1/24"), "one-server", None, []),
    ("one server, strict", on("10.0.0.1/24", security="strict"), "one-server", None,
     ["network-policy"]),
    ("two nodes on one segment", on("10.0.0.1/24", "10.0.0.2/24"), "one-segment", "host-gw", []),
    ("500 nodes on one /16", on(*many(500)), "one-segment", "host-gw", []),
    ("one segment, strict", on("10.0.0.1/24", "10.0.0.2/24", security="strict"),
     "one-segment", "host-gw", ["network-policy"]),
    ("a node on a /32 of its own next to a /24", on("10.0.0.1/24", "10.0.0.2/32"),
     "one-segment", "host-gw", []),  # 10.0.0.2 is on node 1's /24: on-link
    ("two nodes, two subnets", on("10.0.1.1/24", "10.0.2.1/24"), "routed", "vxlan", []),
    ("two racks of two", on("10.0.1.1/24", "10.0.1.2/24", "10.0.2.1/24", "10.0.2.2/24"),
     "routed", "auto", []),
    ("two racks, routers controlled",
     on("10.0.1.1/24", "10.0.1.2/24", "10.0.2.1/24", routers="controlled"), "routed", "auto", []),
    ("cloud, 2 nodes", on("10.0.1.1/24", "10.0.2.1/24", **CLOUD), "cloud-vpc", "cloud", []),
    ("cloud, 50 nodes: the table's last route", on(*many(50), **CLOUD), "cloud-vpc", "cloud", []),
    ("cloud, 51 nodes: one too many", on(*many(51), **CLOUD), "cloud-vpc", "auto", []),
    ("cloud, 51 nodes, quota 100", on(*many(51), route_table_limit=100, **CLOUD),
     "cloud-vpc", "cloud", []),
    ("cloud, gce's 200", on(*many(200), cloud="gce"), "cloud-vpc", "cloud", []),
    ("cloud, strict", on("10.0.1.1/24", "10.0.1.2/24", security="strict", **CLOUD),
     "cloud-vpc", "cloud", ["network-policy"]),
    ("cloud with one node is one server", on("10.0.1.1/24", **CLOUD), "one-server", None, []),
]  # fmt: skip


@pytest.mark.parametrize(("what", "facts", "situation", "backend", "addons"), ROWS,
                         ids=[r[0] for r in ROWS])  # fmt: skip
def test_the_selection_guide_row_by_row(what, facts, situation, backend, addons):
    advice = decide(facts)
    assert (advice.situation, advice.backend, advice.addons) == (situation, backend, addons)
    assert advice.facts and advice.would_change and advice.configuration
    if backend:
        assert f"--backend {backend}" in advice.configuration
        assert f'backend: "{backend}"' in advice.configuration


def test_the_advice_names_its_facts_and_what_would_change_it():
    advice = decide(on(*many(42, "10.0.0.0/24")))
    assert "all 42 nodes on one segment (10.0.0.0/24)" in advice.facts
    cloud = decide(on(*many(50), **CLOUD))
    assert any("node 51 exceeds the route table (50 routes)" in w for w in cloud.would_change)
    routed = decide(on("10.0.1.1/24", "10.0.2.1/24", routers="controlled"))
    assert any("BGP" in w for w in routed.would_change)
    assert "network-policy" in decide(on("10.0.0.1/24", security="strict")).configuration


def test_sites_split_a_subnet_and_unknown_networks_give_auto():
    split = Facts((node("a", "10.0.0.1/24", "dc1"), node("b", "10.0.0.2/24", "dc2")))
    assert decide(split).situation == "routed"
    bare = (NodeFacts("a", (ip_address("10.0.0.1"),)), NodeFacts("b", (ip_address("10.0.0.2"),)))
    unknown = Facts(bare, unknowns=("segments unknown",))
    advice = decide(unknown)
    assert (advice.situation, advice.backend) == ("unknown-segments", "auto")
    assert "segments unknown" in advice.facts
    assert any("host-gw" in w for w in advice.would_change)


def test_cidr_overlaps_are_warned_and_node_subnets_shrink_to_fit():
    overlapping = on("10.244.0.5/24", "10.244.0.6/24", service_cidr=ip_network("10.244.128.0/17"))
    warnings = decide(overlapping).warnings
    assert any("overlaps node network 10.244.0.0/24" in w for w in warnings)
    assert any("overlaps the service CIDR" in w for w in warnings)
    assert "--node-mask-ipv4 25" in decide(on(*many(300))).configuration
    small = on(*many(300), cluster_cidr=ip_network("10.244.0.0/24"))
    assert any("too small" in w for w in decide(small).warnings)


def test_five_thousand_nodes_decide_fast():
    facts = on(*[f"10.{i // 250}.{i % 250}.10/24" for i in range(5000)])
    started = time.perf_counter()
    advice = decide(facts)
    assert time.perf_counter() - started < 2
    assert advice.situation == "routed" and advice.backend == "vxlan"
    assert len(segments(facts.nodes)) == 5000


@pytest.mark.parametrize(
    ("example", "situation", "backend"),
    [("one-server", "one-server", None), ("one-segment", "one-segment", "host-gw"),
     ("cloud-vpc", "cloud-vpc", "cloud"), ("routed", "routed", "auto"),
     ("strict-security", "one-segment", "host-gw")],
)  # fmt: skip
def test_each_documented_example_gives_its_situation(example, situation, backend):
    path = DOCS / f"{example}.yaml"
    advice = decide(from_description(path.read_bytes(), str(path)))
    assert (advice.situation, advice.backend) == (situation, backend)
    assert ("network-policy" in advice.addons) == (example == "strict-security")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"\xff\xfe nodes", "not UTF-8"),
        (b"nodes: [", "not YAML"),
        (b"- just a list", "expected a mapping"),
        (b"nodes: []", "at least one node"),
        (b"nodes: [{name: a, address: 10.0.0.1}]", "prefix length"),
        (b"nodes: [{name: a, address: 999.0.0.1/24}]", "node #1"),
        (b"nodes: [{name: a, address: 10.0.0.1/24}, {name: a, address: 10.0.0.2/24}]",
         "listed twice"),
        (b"nodes: [{name: 7, address: 10.0.0.1/24}]", "name must be a string"),
        (b"nodes: [{name: a, address: 10.0.0.1/24}]\ncloud: mars", "cloud must be"),
        (b"nodes: [{name: a, address: 10.0.0.1/24}]\nrouteTableLimit: true", "positive integer"),
        (b"nodes: [{name: a, address: 10.0.0.1/24}]\nsecret: x", "unknown field secret"),
        (b"nodes: [{name: a, address: 10.0.0.1/24}]\nclusterCIDR: nope", "not a CIDR"),
        (b"nodes: [{name: \"a\\nforged log line\", address: nope/24}]", "node #1"),
        (b"x" * (2 << 20), "larger than"),
    ],
)  # fmt: skip
def test_a_hostile_description_is_refused_in_one_line(text, says):
    with pytest.raises(DescriptionError) as caught:
        from_description(text, "f.yaml")
    message = str(caught.value)
    assert says in message and "\n" not in message and len(message) < 400


def test_node_objects_are_read_as_hostile_and_this_machines_networks_decide_on_link():
    nodes = [
        {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
         "spec": {"podCIDRs": ["10.244.1.0/24"], "providerID": "aws:///z1/i-1"},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.10"}]}},
        {"metadata": {"name": "n2"}, "spec": {"podCIDRs": ["bogus"], "providerID": "aws:///z1/i-2"},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.11"},
                                  {"type": "InternalIP", "address": "not\nan address"}]}},
        {"metadata": {"name": "n3"}, "spec": {"providerID": "aws:///z2/i-3"},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.0.2.10"}]}},
        {"metadata": {}},
    ]  # fmt: skip
    here = [(ip_network("10.0.1.0/24"), ip_address("10.0.1.10"))]
    nodes, unknowns = parse_nodes([Node.from_dict(n) for n in nodes])
    facts = facts_from_nodes(nodes, unknowns, here, "cluster test")
    assert [n.name for n in facts.nodes] == ["n1", "n2", "n3"] and facts.cloud == "aws"
    assert facts.nodes[0].networks == (ip_network("10.0.1.0/24"),)
    assert facts.nodes[2].networks == ()  # off-link from here: its segment unknown
    assert all("\n" not in u for u in facts.unknowns) and any("bogus" in u for u in facts.unknowns)
    assert decide(facts).situation == "cloud-vpc"
    routed = decide(facts_from_nodes(nodes, unknowns, here, "cluster test", cloud="none"))
    assert (routed.situation, routed.backend) == ("routed", "auto")
    assert "2 nodes on this node's segment (10.0.1.0/24), 1 behind routers" in routed.facts
    elsewhere = [(ip_network("192.168.0.0/24"), ip_address("192.168.0.9"))]
    away = facts_from_nodes(nodes, unknowns, elsewhere, "cluster test", cloud="none")
    assert all(not n.networks for n in away.nodes)
    assert any("not a node" in u for u in away.unknowns)
