"""Peer record validation: every refusal reason, and that accepted records become routes."""

from ipaddress import ip_address, ip_network

import pytest
from tests.helpers.routing import context, desired_routes

from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.peer_view import PeerView
from plainnet.agent.validation import validate_peers
from plainnet.datastore.records import InvalidRecord, PeerRecord

CLUSTER = [ip_network("10.244.0.0/16"), ip_network("fd00:10::/48")]
LOCAL = [
    LocalNetwork(ip_network("10.250.0.0/24"), 2, "eth0", ip_address("10.250.0.1")),
    LocalNetwork(ip_network("fd00:250::/64"), 2, "eth0", ip_address("fd00:250::1")),
]
HOST_GW = context("host-gw", LOCAL)
OWN = PeerRecord(
    "own", "node1", (ip_network("10.244.1.0/24"),), (ip_address("10.250.0.1"),), "host-gw"
)


def peer(key, subnets, addresses, backend="host-gw", claimed_at=10, node=None):
    return PeerRecord(
        key,
        node or key,
        tuple(ip_network(s) for s in subnets),
        tuple(ip_address(a) for a in addresses),
        backend,
        claimed_at=claimed_at,
    )


def validate(*records):
    return validate_peers({r.key: r for r in records} | {OWN.key: OWN}, OWN, CLUSTER, HOST_GW)


def test_valid_peers_become_routes():
    good = peer("n2", ["10.244.2.0/24", "fd00:10:0:2::/64"], ["10.250.0.2", "fd00:250::2"])
    result = validate(good)
    assert result.accepted == [good] and result.refusals == []
    routes = desired_routes(result.accepted, HOST_GW)
    assert {str(d): str(r.gateway) for d, r in routes.items()} == {
        "10.244.2.0/24": "10.250.0.2",
        "fd00:10:0:2::/64": "fd00:250::2",
    }
    assert all(r.ifindex == 2 for r in routes.values())


@pytest.mark.parametrize(
    ("record", "reason", "words"),
    [
        (peer("a", ["10.9.0.0/24"], ["10.250.0.2"]), "outside-cluster", "outside the cluster"),
        (peer("b", ["0.0.0.0/0"], ["10.250.0.2"]), "outside-cluster", "0.0.0.0/0"),
        (
            peer("c", ["10.244.2.0/24"], ["192.168.7.7"]),
            "not-on-link",
            "use the vxlan or auto backend",
        ),
        (peer("d", ["fd00:10:0:2::/64"], ["10.250.0.2"]), "family", "no IPv6 node address"),
        (peer("e", ["10.244.2.0/24"], ["10.250.0.2"], backend="vxlan"), "backend", "vxlan"),
        (peer("f", ["10.244.1.0/25"], ["10.250.0.2"]), "overlap", "this node's subnet"),
        (InvalidRecord("g", "value is not JSON"), "unparseable", "value is not JSON"),
    ],
)
def test_each_refusal(record, reason, words):
    result = validate(record)
    assert result.accepted == []
    [refusal] = result.refusals
    assert refusal.reason == reason
    assert words in refusal.log_line()
    assert "\n" not in refusal.log_line()


def test_subnet_overlapping_a_local_network_is_refused():
    cluster = [ip_network("10.0.0.0/8")]
    hostile = peer("h", ["10.250.0.0/24"], ["10.250.0.2"])
    result = validate_peers({"h": hostile}, OWN, cluster, HOST_GW)
    assert [r.reason for r in result.refusals] == ["local-network"]


def test_the_earlier_claim_wins_an_overlap():
    early = peer("early", ["10.244.4.0/22"], ["10.250.0.2"], claimed_at=5)
    late = peer("late", ["10.244.6.0/24"], ["10.250.0.3"], claimed_at=9)
    other = peer("other", ["10.244.9.0/24"], ["10.250.0.4"], claimed_at=1)
    result = validate(late, early, other)
    assert {r.key for r in result.accepted} == {"early", "other"}
    assert [(r.key, r.reason) for r in result.refusals] == [("late", "overlap")]


def test_a_dual_stack_and_a_single_stack_key_for_one_subnet_overlap():
    dual = peer(
        "dual", ["10.244.3.0/24", "fd00:10:0:3::/64"], ["10.250.0.3", "fd00:250::3"], claimed_at=3
    )
    single = peer("single", ["10.244.3.0/24"], ["10.250.0.4"], claimed_at=4)
    result = validate(single, dual)
    assert [r.key for r in result.accepted] == ["dual"]


def test_overlap_resolution_scales():
    records = [
        peer(
            f"n{i}",
            [f"10.244.{i // 256}.{i % 256}/32"],
            [f"10.250.{i // 250 + 1}.{i % 250 + 2}"],  # one address each: no duplicates
            claimed_at=i,
        )
        for i in range(2, 20_000)
    ]
    cluster = [ip_network("10.244.0.0/16")]
    wide = context(
        "host-gw", [LocalNetwork(ip_network("10.250.0.0/16"), 2, "eth0", ip_address("10.250.0.1"))]
    )
    result = validate_peers({r.key: r for r in records}, OWN, cluster, wide)
    assert len(result.accepted) == len(records) - 256  # the /32s inside own 10.244.1.0/24


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("10.250.0.1", "this node's own address"),
        ("10.250.0.0", "the network address of 10.250.0.0/24"),
        ("10.250.0.255", "the broadcast address of 10.250.0.0/24"),
        ("10.244.9.9", "inside the cluster CIDR 10.244.0.0/16"),
        ("127.0.0.1", "a loopback address"),
        ("224.0.0.1", "a multicast address"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "the broadcast address"),
        ("fd00:250::1", "this node's own address (on eth0)"),
        ("fd00:250::", "the network address of fd00:250::/64"),
        ("fd00:10:0:9::5", "inside the cluster CIDR fd00:10::/48"),
        ("::1", "a loopback address"),
        ("fe80::1", "link-local"),
        ("ff02::1", "a multicast address"),
    ],
)
def test_a_node_address_no_route_may_point_at_is_refused(address, what):
    """Each of these used to become a route's gateway (or a VXLAN destination); some the
    kernel refused with EINVAL, retried every second for ever."""
    family = ip_address(address).version
    subnet = "10.244.2.0/24" if family == 4 else "fd00:10:0:2::/64"
    [refusal] = validate(peer("n2", [subnet], [address])).refusals
    assert refusal.reason == "address"
    assert refusal.detail.startswith(f"node address {address} is {what}"), refusal.detail


@pytest.mark.parametrize("backend", ["vxlan", "auto"])
def test_vxlan_destinations_pass_the_same_address_checks(backend):
    ctx = context(backend, LOCAL)
    hostile = peer("n2", ["10.244.2.0/24"], ["10.244.7.7"], backend="vxlan")
    [refusal] = validate_peers({"n2": hostile}, OWN, CLUSTER, ctx).refusals
    assert refusal.reason == "address"


def test_a_subnet_of_another_length_than_the_clusters_node_subnets_is_refused():
    records = {
        "small": peer("small", ["10.244.2.0/25"], ["10.250.0.2"]),
        "big6": peer("big6", ["fd00:10:0:4::/63"], ["fd00:250::4"]),
        "good": peer("good", ["10.244.3.0/24"], ["10.250.0.3"]),
    }
    result = validate_peers(records, OWN, CLUSTER, HOST_GW, {4: 24, 6: 64})
    assert [r.key for r in result.accepted] == ["good"]
    assert {r.key: r.reason for r in result.refusals} == {
        "small": "prefix-length",
        "big6": "prefix-length",
    }


def test_peer_strings_reach_the_log_escaped_and_capped():
    forged = "n2\n2026-12-02 INFO plainnet.agent: route added: 0.0.0.0/0"
    hostile = peer("k", ["10.9.0.0/24"], ["10.250.0.2"], node=forged)
    [refusal] = validate(hostile).refusals
    line = refusal.log_line()
    assert "\n" not in line and "\\n2026-12-02" in line
    huge = peer("k2", ["10.9.0.0/24"], ["10.250.0.2"], node="x" * (1 << 20))
    [refusal] = validate(huge).refusals
    assert len(refusal.log_line()) < 1000


def test_a_cluster_cidr_around_the_node_network_still_lets_nodes_be_gateways():
    cluster = [ip_network("10.0.0.0/8")]
    node = peer("node", ["10.244.2.0/24"], ["10.250.0.2"])
    pod = peer("pod", ["10.244.3.0/24"], ["10.7.0.5"])
    result = validate_peers({"node": node, "pod": pod}, OWN, cluster, HOST_GW)
    assert [r.key for r in result.accepted] == ["node"]
    assert [(r.key, r.reason) for r in result.refusals] == [("pod", "address")]


def test_two_nodes_claiming_one_address_the_later_is_refused_and_named():
    early = peer("early", ["10.244.2.0/24"], ["10.250.0.2"], claimed_at=1)
    late = peer("late", ["10.244.3.0/24"], ["10.250.0.2"], claimed_at=2)
    result = validate(late, early)
    assert [r.key for r in result.accepted] == ["early"]
    [refusal] = result.refusals
    assert (refusal.key, refusal.reason) == ("late", "duplicate-address")
    assert "node early's" in refusal.detail


@pytest.mark.parametrize(
    ("mac", "reason"),
    [("00:00:00:00:00:00", "mac"), ("0e:70:0a:fa:01:02", "mac"), ("aa:00:00:00:00:01", None)],
)
def test_vxlan_macs_all_zero_or_this_nodes_own_are_refused(mac, reason):
    vx = context("vxlan", LOCAL)
    record = PeerRecord(
        "k",
        "n",
        (ip_network("10.244.2.0/24"),),
        (ip_address("10.250.0.7"),),
        "vxlan",
        backend_data={"VNI": 1, "VtepMAC": mac},
    )
    result = validate_peers({"k": record}, OWN, CLUSTER, vx)
    assert [r.reason for r in result.refusals] == ([reason] if reason else [])


def test_a_mac_another_peer_holds_is_refused_and_cannot_re_point_its_fdb_entry():
    vx = context("vxlan", LOCAL)
    honest = PeerRecord(
        "honest",
        "honest",
        (ip_network("10.244.2.0/24"),),
        (ip_address("10.250.0.7"),),
        "vxlan",
        backend_data={"VtepMAC": "aa:00:00:00:00:07"},
        claimed_at=1,
    )
    thief = PeerRecord(
        "thief",
        "thief",
        (ip_network("10.244.3.0/24"),),
        (ip_address("10.250.0.8"),),
        "vxlan",
        backend_data={"VtepMAC": "aa:00:00:00:00:07"},
        claimed_at=2,
    )
    view = PeerView(OWN, CLUSTER, vx)
    view.rebuild({"honest": honest})
    assert view.update({"honest": honest, "thief": thief}, {"thief"}) is None  # coupled
    view.rebuild({"honest": honest, "thief": thief})
    assert view.refusals["thief"].reason == "duplicate-mac"
    assert view.entries.fdb == {(7, "aa:00:00:00:00:07"): frozenset({ip_address("10.250.0.7")})}
    view.rebuild({"honest": honest})  # the thief's record deleted: the entry is intact
    assert view.entries.fdb == {(7, "aa:00:00:00:00:07"): frozenset({ip_address("10.250.0.7")})}
