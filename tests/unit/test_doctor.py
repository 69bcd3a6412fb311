"""``plainnet doctor``'s checks over observations built by hand — each one tripped by
the fact it looks for, nothing else — and the nft JSON reading (the kernel: tests/doctor/)."""

import time
from ipaddress import ip_address, ip_network

from plainnet.agent.local_networks import LocalNetwork
from plainnet.datastore.records import PeerRecord
from plainnet.doctor.checks import (
    FAIL,
    OK,
    WARN,
    ForwardChain,
    Observation,
    Route,
    cni_config,
    duplicate_addresses,
    forward_policy,
    peer_routes,
    rp_filter,
    run_checks,
)
from plainnet.doctor.gather import _accepted
from plainnet.node_state import NodeState

PROTO = 158
CIDR = ip_network("10.244.0.0/16")


def peer(i: int, name: str | None = None) -> PeerRecord:
    return PeerRecord(
        key=f"k{i}",
        node=name or f"node{i}",
        subnets=(ip_network(f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}/32"),),
        addresses=(ip_address(f"10.250.{i // 256}.{i % 256}"),),
        backend="host-gw",
    )  # fmt: skip


def observation(peers: list[PeerRecord], routes: list[Route]) -> Observation:
    own = (ip_network("10.99.0.0/32"),)
    state = NodeState("me", (ip_network("10.0.0.0/8"),), own, 1500, "host-gw")
    return Observation(
        node="me",
        route_protocol=PROTO,
        run_dir="/run/plainnet",
        state=state,
        peers=peers,
        routes=routes,
        local=[LocalNetwork(ip_network("10.250.0.0/16"), 2, "eth0", ip_address("10.250.255.1"))],
    )


def ours(record: PeerRecord) -> Route:
    return Route(record.subnets[0], record.addresses[0], "eth0", PROTO)


def by_check(findings):
    return {f.check: f for f in findings}


def test_routes_missing_wrong_shadowed_and_stale_each_name_their_route():
    peers = [peer(i) for i in range(1, 5)]
    routes = [ours(p) for p in peers[:3]]
    routes[1] = Route(routes[1].destination, ip_address("10.250.9.9"), "eth0", PROTO)
    routes.append(Route(ip_network("10.100.0.99/32"), ip_address("10.250.0.99"), "eth0", PROTO))
    routes.append(Route(peers[2].subnets[0], None, "lo", 4))  # a foreign route as specific
    found = by_check(peer_routes(observation(peers, routes)))
    assert {c: f.status for c, f in found.items()} == dict.fromkeys(found, FAIL)
    assert "10.100.0.4/32 (node node4)" in found["route-missing"].fact
    assert "via 10.250.9.9 (should be 10.250.0.2)" in found["route-gateway"].fact
    assert found["route-shadowed"].fix == "ip route del 10.100.0.3/32 proto 4"
    assert found["route-stale"].fix == "ip route del 10.100.0.99/32 proto 158"


def test_a_healthy_table_and_unread_records():
    peers = [peer(i) for i in range(1, 5)]
    found = peer_routes(observation(peers, [ours(p) for p in peers]))
    assert all(f.status == OK for f in found)
    unread = observation(peers, [])
    unread.peers, unread.peers_error = None, "etcd unreachable"
    assert all(f.status == WARN and "etcd unreachable" in f.fact for f in peer_routes(unread))


def test_a_hostile_node_name_is_escaped_and_capped():
    record = peer(7, name="evil\nFAIL forged line" + "x" * 5000)
    found = by_check(peer_routes(observation([record], [])))
    fact = found["route-missing"].fact
    assert "\n" not in fact and len(fact) < 300


def test_five_thousand_peers_are_compared_as_sets():
    peers = [peer(i) for i in range(1, 5001)]
    routes = [ours(p) for p in peers] + [Route(ip_network(f"192.168.{i % 256}.0/24"), None,
                                               "eth1", 2) for i in range(256)]  # fmt: skip
    o = observation(peers, routes)
    started = time.perf_counter()
    findings = run_checks(o)
    assert time.perf_counter() - started < 0.5
    assert all(f.status != FAIL for f in findings if f.check.startswith("route-"))


def test_a_dropping_forward_chain_per_family_and_its_accepts():
    o = observation([], [])
    cidrs = (CIDR, ip_network("fd00::/56"))
    o.state = NodeState("me", cidrs, (ip_network("10.244.1.0/24"),), 1500, "host-gw")
    o.forward_chains = [ForwardChain("ip", "filter", "FORWARD", "drop", (CIDR,))]
    assert forward_policy(o).status == OK  # accepts the IPv4 range; IPv6 is not its family
    o.forward_chains = [ForwardChain("inet", "fw", "fwd", "drop", (ip_network("0.0.0.0/0"),))]
    finding = forward_policy(o)
    assert finding.status == FAIL and finding.fix == (
        "nft insert rule inet fw fwd ip6 daddr fd00::/56 accept && "
        "nft insert rule inet fw fwd ip6 saddr fd00::/56 accept"
    )
    o.forward_chains = None
    assert forward_policy(o).status == WARN


def test_nft_rules_accepting_by_prefix_or_unconditionally():
    by_prefix = [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                            "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
                 {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}]  # fmt: skip
    assert _accepted(by_prefix) == [CIDR]
    assert _accepted([{"accept": None}]) == [ip_network("0.0.0.0/0"), ip_network("::/0")]
    dropping = [{"match": {"op": "==", "left": {"payload": {"field": "saddr"}}, "right": "x"}},
                {"drop": None}]  # fmt: skip
    assert _accepted(dropping) == []
    hostile = [{"match": {"op": "==", "left": "x", "right": {"prefix": 7}}}, {"accept": None}]
    assert _accepted(hostile) == []


def test_strict_rp_filter_is_a_warning_with_its_fix():
    o = observation([], [])
    o.pod_interfaces = ("eth0",)
    o.sysctls = {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.eth0.rp_filter": "1"}
    finding = rp_filter(o)
    assert finding.status == WARN and "sysctl -w net.ipv4.conf.eth0.rp_filter=2" in finding.fix
    o.sysctls["net.ipv4.conf.eth0.rp_filter"] = "2"
    assert rp_filter(o).status == OK


def test_fix_commands_quote_what_peers_and_files_name():
    o = observation([], [])
    o.cni_files = ("00-x; rm -rf ~.conflist", "10-plainnet.conflist")
    assert cni_config(o).fix == (
        "mv '/etc/cni/net.d/00-x; rm -rf ~.conflist' '/etc/cni/net.d/00-x; rm -rf ~.conflist.off'"
    )
    o.cni_files = ("00-\x1b[2J.conflist", "10-plainnet.conflist")
    assert cni_config(o).fix == "move that file out of the directory"
    first = peer(1)
    hostile = PeerRecord(
        "/k/$(reboot)", "x", (ip_network("10.1.0.0/24"),), first.addresses, "host-gw", claimed_at=9
    )
    o.peers = [first, hostile]
    assert duplicate_addresses(o).fix == "etcdctl del '/k/$(reboot)'"


def test_a_node_without_a_podcidr_is_named_as_the_reason_for_no_subnet():
    o = observation([], [])
    o.state, o.node_pod_cidrs = None, ()
    found = {f.check: f for f in run_checks(o)}
    assert found["node-podcidr"].status == FAIL and "no podCIDR" in found["node-podcidr"].fact
    assert "allocate-node-cidrs" in found["node-podcidr"].fix
    assert found["subnet"].status == FAIL  # the consequence, also named
