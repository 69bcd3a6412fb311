"""The vxlan and auto backends, pure: VTEP MACs, desired routes and entries, the diff."""

import json
from ipaddress import ip_address, ip_network

import pytest
from tests.helpers.routing import context, desired_routes, is_overlay

from plainnet.agent.backends import vxlan
from plainnet.agent.backends.base import NodeIdentity
from plainnet.agent.kernel_model import LinkEntries
from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.peer_view import PeerView
from plainnet.agent.plan import Plan, plan_entries
from plainnet.agent.validation import validate_peers
from plainnet.datastore import flannel_format as fmt
from plainnet.datastore.records import PeerRecord

CLUSTER = [ip_network("10.244.0.0/16"), ip_network("fd00:10:244::/56")]
LOCAL = [
    LocalNetwork(ip_network("10.250.1.0/24"), 2, "eth0", ip_address("10.250.1.2")),
    LocalNetwork(ip_network("fd00:250:1::/64"), 2, "eth0", ip_address("fd00:250:1::2")),
]
VXLAN = context("vxlan", LOCAL)
AUTO = context("auto", LOCAL)
OWN = PeerRecord(
    "own", "node1", (ip_network("10.244.1.0/24"),), (ip_address("10.250.1.2"),), "vxlan"
)


def peer(key, address, address6=None, index=2, backend_data=None, backend="vxlan"):
    addresses = [ip_address(address)] + ([ip_address(address6)] if address6 else [])
    return PeerRecord(
        key,
        key,
        (ip_network(f"10.244.{index}.0/24"), ip_network(f"fd00:10:244:{index:x}::/64")),
        tuple(addresses),
        backend,
        backend_data=backend_data or {},
        claimed_at=index,
    )


#: A dual-stack flanneld node's lease: one VTEP per underlay family.
FLANNEL_DUAL_STACK_PEER = fmt.parse_lease(
    "k",
    "10.244.4.0-24&fd00:10:244:4::-64",
    json.dumps(
        {
            "PublicIP": "10.250.2.4",
            "PublicIPv6": "fd00:250:2::4",
            "BackendType": "vxlan",
            "BackendData": {"VNI": 1, "VtepMAC": "aa:00:00:00:00:04"},
            "BackendV6Data": {"VNI": 1, "VtepMAC": "aa:00:00:00:06:04"},
        }
    ).encode(),
    1,
)


def entries_of(peers, routing):
    """The VXLAN entries the agent's peer view wants for ``peers``."""
    view = PeerView(OWN, CLUSTER, routing)
    view.rebuild({p.key: p for p in peers})
    return view.entries


def test_derived_mac_is_locally_administered_unicast_and_readable_for_ipv4():
    assert vxlan.derived_mac(ip_address("10.250.1.2")) == "0e:70:0a:fa:01:02"
    mac6 = vxlan.derived_mac(ip_address("fd00:250:1::2"))
    first = int(mac6[:2], 16)
    assert first & 0b10 and not first & 0b01  # local, unicast
    assert mac6 == vxlan.derived_mac(ip_address("fd00:250:1::2"))
    assert mac6 != vxlan.derived_mac(ip_address("fd00:250:1::3"))


def fdb_of(peers, ctx):
    """MAC -> underlay destinations the peer view wants."""
    return {mac: dst for (_, mac), dst in entries_of(peers, ctx).fdb.items()}


def test_vxlan_routes_every_pod_subnet_through_the_peers_vtep():
    remote = peer("n3", "10.250.2.3", index=3)
    routes = desired_routes([remote], VXLAN)
    v4, v6 = routes[ip_network("10.244.3.0/24")], routes[ip_network("fd00:10:244:3::/64")]
    assert (str(v4.gateway), v4.ifindex) == ("10.244.3.0", 7)
    # IPv6 pods over the IPv4 underlay, via the peer device's EUI-64 link-local address
    assert (str(v6.gateway), v6.ifindex) == ("fe80::c70:aff:fefa:203", 7)
    assert (v4.onlink, v6.onlink) == (True, False)
    mac = "0e:70:0a:fa:02:03"
    entries = entries_of([remote], VXLAN)
    assert entries.neighbours == {(7, v4.gateway): mac, (7, v6.gateway): mac}
    assert entries.fdb == {(7, mac): frozenset({ip_address("10.250.2.3")})}


def test_a_flannel_nodes_published_mac_is_used():
    flannel = peer(
        "n4", "10.250.2.4", index=4, backend_data={"VNI": 1, "VtepMAC": "AA:bb:cc:dd:ee:04"}
    )
    assert set(fdb_of([flannel], VXLAN)) == {"aa:bb:cc:dd:ee:04"}


def test_an_ipv6_underlay_uses_flannels_backend_v6_data():
    v6 = context("vxlan", LOCAL, underlay=6)
    record = FLANNEL_DUAL_STACK_PEER
    assert fdb_of([record], v6) == {"aa:00:00:00:06:04": {ip_address("fd00:250:2::4")}}
    assert set(fdb_of([record], VXLAN)) == {"aa:00:00:00:00:04"}


def test_a_node_with_an_ipv6_underlay_publishes_where_flanneld_looks():
    backend = vxlan.VxlanBackend()
    uplink = LOCAL[1]
    node = NodeIdentity("n", (ip_address("fd00:250:1::2"),), uplink, 1500)
    published = backend.published_data(node)
    lease = json.loads(fmt.lease_value("n", node.addresses, "vxlan", published.v4, published.v6))
    assert "BackendData" not in lease
    assert lease["BackendV6Data"]["VtepMAC"] == vxlan.derived_mac(node.addresses[0])


def test_auto_routes_on_link_peers_directly_and_encapsulates_the_others():
    near = peer("near", "10.250.1.5", "fd00:250:1::5", index=5)
    far = peer("far", "10.250.2.6", "fd00:250:2::6", index=6)
    routes = desired_routes([near, far], AUTO)
    direct = routes[ip_network("10.244.5.0/24")]
    assert (str(direct.gateway), direct.ifindex, direct.onlink) == ("10.250.1.5", 2, False)
    assert not is_overlay(routes[ip_network("fd00:10:244:5::/64")], AUTO)
    assert is_overlay(routes[ip_network("10.244.6.0/24")], AUTO)
    assert routes[ip_network("fd00:10:244:6::/64")].ifindex == 7
    # only encapsulated peers need neighbour and FDB entries
    assert set(fdb_of([near, far], AUTO)) == {"0e:70:0a:fa:02:06"}


@pytest.mark.parametrize(
    ("record", "reason", "words"),
    [
        (peer("a", "10.250.2.3", backend="host-gw"), "backend", "backend 'host-gw'"),
        (peer("b", "10.250.2.3", backend_data={"VNI": 2}), "backend", "VNI 2"),
        (peer("c", "fd00:250:2::3"), "family", "underlay is IPv4"),
        (
            peer("d", "10.250.2.3", backend_data={"VtepMAC": "ff:ff:ff:ff:ff:ff"}),
            "unparseable",
            "unicast",
        ),
    ],
)
def test_vxlan_refusals(record, reason, words):
    result = validate_peers({record.key: record, "own": OWN}, OWN, CLUSTER, VXLAN)
    [refusal] = result.refusals
    assert (refusal.reason, words in refusal.detail) == (reason, True), refusal.detail


def test_off_link_peers_are_accepted_by_vxlan():
    far = peer("far", "10.250.2.6", index=6)
    assert validate_peers({"far": far}, OWN, CLUSTER, VXLAN).accepted == [far]


def entries(neighbours=None, fdb=None):
    return LinkEntries(
        {(7, ip_address(a)): m for a, m in (neighbours or {}).items()},
        {(7, m): frozenset(ip_address(d) for d in ds) for m, ds in (fdb or {}).items()},
    )


def plan_of(desired, kernel):
    plan = Plan()
    plan_entries(plan, desired, kernel)
    return plan


def test_plan_sets_missing_fixes_changed_and_deletes_stale_entries():
    desired = entries(
        {"10.244.2.0": "0e:00:00:00:00:02", "10.244.3.0": "0e:00:00:00:00:03"},
        {"0e:00:00:00:00:02": ["10.250.1.2"], "0e:00:00:00:00:03": ["10.250.2.3"]},
    )
    kernel = entries(
        {"10.244.3.0": "0e:00:00:00:00:99", "10.244.9.0": "0e:00:00:00:00:09"},
        {
            "0e:00:00:00:00:03": ["10.250.2.99", "10.250.2.3"],  # an extra destination
            "0e:00:00:00:00:09": ["10.250.1.9"],
        },
    )
    plan = plan_of(desired, kernel)
    assert sorted(str(a) for (_, a), _ in plan.set_neighbours) == ["10.244.2.0", "10.244.3.0"]
    assert plan.reset_fdb == [(7, "0e:00:00:00:00:03")]
    assert sorted((m, str(d)) for (_, m), d in plan.set_fdb) == [
        ("0e:00:00:00:00:02", "10.250.1.2"),
        ("0e:00:00:00:00:03", "10.250.2.3"),
    ]
    assert plan.delete_fdb == [(7, "0e:00:00:00:00:09")]
    assert [str(a) for _, a in plan.delete_neighbours] == ["10.244.9.0"]
    assert not plan_of(desired, desired)


def test_mtu_leaves_room_for_the_encapsulation():
    assert vxlan.device_mtu(1500, 4) == 1450
    assert vxlan.device_mtu(1500, 6) == 1430


@pytest.mark.parametrize("backend", ["vxlan", "auto"])
def test_flannel_config_carries_vxlan_settings(backend):
    text = fmt.render_config(
        [ip_network("10.244.0.0/16")], {4: 24}, backend, {"vni": 42, "port": 4789}
    )
    config = fmt.parse_config(text)
    assert (config.backend, config.backend_options) == (backend, {"vni": 42, "port": 4789})
    # flanneld reads the same document: vxlan, with DirectRouting for auto
    assert '"Type": "vxlan"' in text and ('"DirectRouting": true' in text) == (backend == "auto")


def test_a_dual_underlay_node_matches_flannels_dual_stack_layout():
    """Flannel v0.20 dual stack: IPv4 pods over flannel.1 on the IPv4 underlay, IPv6 pods
    over flannel-v6.1 on the IPv6 underlay, one VTEP each in the lease. plainnet used to
    publish no BackendV6Data (flanneld then ignored the whole lease) and to send IPv6
    pod traffic over the IPv4 underlay to flannel.1's MAC."""
    backend = vxlan.VxlanBackend()
    v4, v6 = ip_address("10.250.1.2"), ip_address("fd00:250:1::2")
    subnets = (ip_network("10.244.1.0/24"), ip_network("fd00:10:244:1::/64"))
    node = NodeIdentity("n", (v4, v6), LOCAL[0], 1500, subnets)
    published = backend.published_data(node)
    lease = json.loads(fmt.lease_value("n", node.addresses, "vxlan", published.v4, published.v6))
    assert lease["PublicIPv6"] == str(v6)
    assert lease["BackendData"] == {"VNI": 1, "VtepMAC": vxlan.derived_mac(v4)}
    assert lease["BackendV6Data"] == {"VNI": 1, "VtepMAC": vxlan.derived_mac(v6)}
    assert backend.pod_mtu(node) == 1500 - 70  # the narrower encapsulation fits both
    # a dual-stack Flannel peer: each family over its own device, to its own VTEP
    links = vxlan.VxlanLinks(7, 4, vxlan.derived_mac(v4), 8, vxlan.derived_mac(v6))
    record = FLANNEL_DUAL_STACK_PEER
    state = backend.peer_state(record, LOCAL, links)
    by_family = {route.destination.version: route for route in state.routes.values()}
    assert by_family[4].ifindex == 7 and by_family[4].gateway == ip_address("10.244.4.0")
    assert by_family[6].ifindex == 8 and by_family[6].gateway.is_link_local
    assert dict(state.fdb) == {
        (7, "aa:00:00:00:00:04"): ip_address("10.250.2.4"),
        (8, "aa:00:00:00:06:04"): ip_address("fd00:250:2::4"),
    }
    # a peer with an IPv4 address only (single underlay) still gets its IPv6 pods over
    # the IPv4 device, to its one VTEP
    single = peer("p", "10.250.2.5", index=5)
    routes = backend.peer_state(single, LOCAL, links).routes
    assert {route.ifindex for route in routes.values()} == {7}
