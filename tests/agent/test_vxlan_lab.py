"""The vxlan and auto backends end to end, on two L2 segments joined by a router that
knows nothing of pod subnets (scenario 5): real agents, real VXLAN devices, packets.

Kernel state is read back with iproute2 (``ip``, ``bridge``), an oracle independent of
the agent's own netlink code; that traffic is (or is not) encapsulated is read from the
VXLAN device's own packet counters.
"""

import json
from ipaddress import ip_address

import pytest
from tests.helpers.cluster_checks import (
    agent_cleanup,
    device_exists,
    etcd_tool,
    fdb,
    lease_key,
    link,
    metric,
    neighbours,
    ping,
    pod_on,
    subnet_of,
    tx_packets,
    wait_until,
)

from plainnet.agent.backends.vxlan import DEVICE_NAME as DEVICE
from plainnet.agent.backends.vxlan import DEVICE_NAME_V6 as DEVICE_V6
from plainnet.agent.backends.vxlan import derived_mac
from plainnet.lab.reachability import probe_pods

pytestmark = pytest.mark.root

# In the two-segment lab, odd nodes are on segment lana, even nodes on lanb.
SAME_SEGMENT, OTHER_SEGMENT = "node3", "node2"


def two_segment_cluster(cluster_factory, lab_name, backend, **spec):
    spec = {"nodes": 4, "pods_per_node": 1, **spec}
    return cluster_factory(lab_name, topology="two-segments", backend=backend, **spec)


def device_mtu(cluster, node):
    return link(cluster, node)["mtu"]


@pytest.mark.parametrize("backend", ["vxlan", "auto"])
def test_every_pod_reaches_every_pod_across_segments(cluster_factory, lab_name, backend):
    cluster = two_segment_cluster(cluster_factory, lab_name, backend)
    probes = probe_pods(cluster.pods)
    assert len(probes) == 4 * 3 * 2  # dual-stack pods, dual underlay
    assert [p for p in probes if not p.ok] == []
    for probe in probes:  # no NAT on the way: the target saw the source pod's address
        source = next(p for p in cluster.pods if p.name == probe.source)
        assert probe.seen_from in {str(a) for a in source.addresses}
    # node1's peers' VTEPs, one per family as with Flannel's dual stack: on plainnet.vxlan
    # the MAC derived from the IPv4 node address, frames sent there; on plainnet.vxlan6
    # the same for IPv6
    peers = [n for n in cluster.nodes if n != "node1"]
    encapsulated = peers if backend == "vxlan" else [n for n in peers if n != SAME_SEGMENT]
    for device, family in ((DEVICE, "ipv4"), (DEVICE_V6, "ipv6")):
        expected = {
            derived_mac(getattr(cluster.lab.host(n), family)): {
                str(getattr(cluster.lab.host(n), family))
            }
            for n in encapsulated
        }
        assert fdb(cluster, "node1", device) == expected
        assert len(neighbours(cluster, "node1", device)) == len(encapsulated)
    assert link(cluster, "node1", DEVICE_V6)["mtu"] == 1500 - 70


def test_host_gw_refuses_cross_segment_peers_and_keeps_its_segment(cluster_factory, lab_name):
    cluster = two_segment_cluster(cluster_factory, lab_name, "host-gw")
    probes = probe_pods(cluster.pods)
    segment = {n: int(n.removeprefix("node")) % 2 for n in cluster.nodes}
    node_of = {p.name: p.node for p in cluster.pods}
    for probe in probes:
        same = segment[node_of[probe.source]] == segment[node_of[probe.target]]
        assert probe.ok == same, probe
    wait_until(
        lambda: (
            metric(cluster, "node1", 'plainnet_peer_records_refused_total{reason="not-on-link"}')
            == 2
        ),
        5,
        what="two not-on-link refusals on node1",
    )
    refusals = cluster.refusals("node1")
    assert len(refusals) == 2
    assert all("host-gw needs every node on one L2 segment" in r for r in refusals)
    assert not device_exists(cluster, "node1")


def test_auto_routes_directly_within_a_segment_and_encapsulates_across(cluster_factory, lab_name):
    cluster = two_segment_cluster(cluster_factory, lab_name, "auto")
    source = pod_on(cluster, "node1")
    for target_node, encapsulated in ((SAME_SEGMENT, False), (OTHER_SEGMENT, True)):
        target = pod_on(cluster, target_node)
        for address in target.addresses:
            device = DEVICE if address.version == 4 else DEVICE_V6  # Flannel's layout
            before = tx_packets(cluster, "node1", device)
            uplink_before = tx_packets(cluster, "node1", "eth0")
            assert ping(cluster, source, address, "-c", "20")
            sent = tx_packets(cluster, "node1", device) - before
            if encapsulated:
                assert sent >= 20, f"{address}: only {sent} packets through VXLAN"
            else:
                assert sent == 0, f"{address}: {sent} packets encapsulated on-link"
                assert tx_packets(cluster, "node1", "eth0") - uplink_before >= 20


def test_large_unfragmentable_packets_pass_pod_to_pod(cluster_factory, lab_name):
    cluster = two_segment_cluster(cluster_factory, lab_name, "vxlan", nodes=2)
    source, target = pod_on(cluster, "node1"), pod_on(cluster, "node2")
    assert device_mtu(cluster, "node1") == 1500 - 50  # each device: its underlay's
    assert link(cluster, "node1", DEVICE_V6)["mtu"] == 1500 - 70
    mtu = 1500 - 70
    state = json.loads((cluster.run_dir("node1") / "subnet.json").read_text())
    assert state["mtu"] == mtu  # pods: what fits once encapsulated, in either family
    for address in target.addresses:
        headers = 28 if address.version == 4 else 48
        # a full-size pod packet, Don't Fragment: it must arrive whole
        assert ping(cluster, source, address, "-M", "do", "-s", str(mtu - headers))
        # one byte more does not fit the pod's own interface: refused at the source,
        # not lost on the way
        assert not ping(cluster, source, address, "-M", "do", "-s", str(mtu - headers + 1))


def test_ipv6_underlay(cluster_factory, lab_name):
    """Nodes with IPv6 addresses only: one device on the IPv6 underlay carries the pods
    of both families (the single-underlay mode)."""
    cluster = two_segment_cluster(cluster_factory, lab_name, "vxlan", nodes=3, underlay=6)
    assert [p for p in probe_pods(cluster.pods) if not p.ok] == []
    assert not device_exists(cluster, "node1", DEVICE_V6)
    destinations = {d for dsts in fdb(cluster, "node1").values() for d in dsts}
    assert destinations == {str(cluster.lab.host(n).ipv6) for n in ("node2", "node3")}
    assert device_mtu(cluster, "node1") == 1500 - 70


def test_peer_address_change_and_departure_are_followed(cluster_factory, lab_name):
    cluster = two_segment_cluster(cluster_factory, lab_name, "vxlan", nodes=3)
    node3 = cluster.lab.host("node3")
    mac = derived_mac(node3.ipv4)
    assert fdb(cluster, "node1")[mac] == {str(node3.ipv4)}
    # node3 moves to a second address on its segment; its lease says so (written here
    # with node3's agent stopped: a running agent would undo a rewrite of its record)
    new_address = "10.250.1.50"
    cluster.lab.run("node3", ["ip", "addr", "add", f"{new_address}/24", "dev", "eth0"], check=True)
    key = lease_key(cluster, "node3")
    cluster.stop_agent("node3")
    lease = json.loads(etcd_tool(cluster, "get", key))
    etcd_tool(cluster, "put", key, json.dumps(lease | {"PublicIP": new_address}))
    for node in ("node1", "node2"):
        wait_until(
            lambda n=node: fdb(cluster, n).get(mac) == {new_address},
            5,
            what=f"{node}'s FDB entry for node3 to follow its new address",
        )
    assert ping(cluster, pod_on(cluster, "node2"), pod_on(cluster, "node3").addresses[0])
    # node3 leaves: its FDB and neighbour entries and its routes go everywhere
    etcd_tool(cluster, "delete", key)
    subnet = subnet_of(cluster, "node3")
    for node in ("node1", "node2"):
        wait_until(
            lambda n=node: (
                mac not in fdb(cluster, n)
                and mac not in neighbours(cluster, n).values()
                and subnet not in cluster.node_routes(n)
            ),
            5,
            what=f"{node} to forget node3",
        )


def test_stale_and_missing_entries_converge_on_restart_and_at_once(cluster_factory, lab_name):
    cluster = two_segment_cluster(cluster_factory, lab_name, "vxlan", nodes=2)
    want_fdb, want_neighbours = fdb(cluster, "node1"), neighbours(cluster, "node1")
    [node2_mac] = want_fdb
    cluster.stop_agent("node1")
    stale = [
        ["bridge", "fdb", "del", node2_mac, "dev", "plainnet.vxlan"],
        [
            "bridge",
            "fdb",
            "add",
            "0e:70:0a:fa:02:63",
            "dev",
            "plainnet.vxlan",
            "dst",
            "10.250.2.99",
        ],
        [
            "ip",
            "neigh",
            "add",
            "10.244.99.0",
            "lladdr",
            "0e:70:0a:fa:02:63",
            "dev",
            "plainnet.vxlan",
            "nud",
            "permanent",
        ],
        [
            "ip",
            "neigh",
            "replace",
            next(iter(want_neighbours)),
            "lladdr",
            "0e:00:00:00:00:01",
            "dev",
            "plainnet.vxlan",
            "nud",
            "permanent",
        ],
    ]
    for command in stale:
        cluster.lab.run("node1", command, check=True)
    assert fdb(cluster, "node1") != want_fdb
    cluster.start_agent("node1")
    wait_until(
        lambda: (
            fdb(cluster, "node1") == want_fdb and neighbours(cluster, "node1") == want_neighbours
        ),
        10,
        what="node1's VXLAN entries to converge after a restart",
    )
    # while it runs, an entry deleted by hand comes back without waiting for a resync
    cluster.lab.run(
        "node1", ["bridge", "fdb", "del", node2_mac, "dev", "plainnet.vxlan"], check=True
    )
    wait_until(lambda: fdb(cluster, "node1") == want_fdb, 5, what="the FDB entry to come back")
    # and the device itself, deleted, is created again with everything on it
    cluster.lab.run("node1", ["ip", "link", "del", "plainnet.vxlan"], check=True)
    wait_until(
        lambda: (
            fdb(cluster, "node1") == want_fdb and neighbours(cluster, "node1") == want_neighbours
        ),
        5,
        what="the VXLAN device to be recreated",
    )
    assert ping(cluster, pod_on(cluster, "node1"), pod_on(cluster, "node2").addresses[0])


def set_backend(cluster, backend):
    """What an operator does: write the new network config, restart every agent."""
    cluster.plainnet(
        "node1",
        "etcd",
        "init",
        "--etcd-endpoint",
        cluster.etcd_endpoint,
        *cluster._cidr_args(),
        "--backend",
        backend,
    )
    for node in cluster.nodes:
        cluster.stop_agent(node)
        cluster.start_agent(node)


def test_changing_the_backend_converges_without_leftovers(cluster_factory, lab_name):
    cluster = cluster_factory(lab_name, nodes=3, pods_per_node=1)  # one segment, host-gw
    direct = cluster.node_routes("node1")
    assert not device_exists(cluster, "node1")
    set_backend(cluster, "vxlan")
    for node in cluster.nodes:
        wait_until(
            lambda n=node: (
                len(fdb(cluster, n)) == 2
                and all(via == dst.split("/")[0] for dst, via in cluster.node_routes(n).items())
            ),
            10,
            what=f"{node} to route through VXLAN",
        )
    assert [p for p in probe_pods(cluster.pods) if not p.ok] == []
    set_backend(cluster, "host-gw")
    for node in cluster.nodes:
        wait_until(
            lambda n=node: (
                not device_exists(cluster, n)
                and len(cluster.node_routes(n)) == 2
                and all(
                    ip_address(via).is_private and via.startswith("10.250.")
                    for via in cluster.node_routes(n).values()
                )
            ),
            10,
            what=f"{node} to route directly again, with no VXLAN device",
        )
    assert cluster.node_routes("node1") == direct
    assert [p for p in probe_pods(cluster.pods) if not p.ok] == []


def test_cleanup_removes_the_vxlan_device(cluster_factory, lab_name):
    cluster = two_segment_cluster(cluster_factory, lab_name, "vxlan", nodes=2)
    cluster.stop_agent("node1")
    result = agent_cleanup(cluster, "node1")
    assert result.returncode == 0, result.stderr
    assert "the device plainnet.vxlan" in result.stdout
    assert not device_exists(cluster, "node1")
    assert cluster.node_routes("node1", 4) == {} and cluster.node_routes("node1", 6) == {}


def test_a_flannel_vxlan_node_interoperates(cluster_factory, lab_name):
    """flanneld is not packaged for Debian 12 and cannot be fetched here, so node3 plays a
    dual-stack Flannel v0.20 vxlan node as ``pkg/backend/vxlan`` sets one up: ``flannel.1``
    on the IPv4 underlay and ``flannel-v6.1`` on the IPv6 underlay, each with a MAC of
    its own (not plainnet's derived ones) and its subnet's network address (/32, /128);
    the lease JSON flanneld writes (``PublicIP``, ``PublicIPv6``, ``BackendData`` and
    ``BackendV6Data``, each ``{VNI, VtepMAC}``); and for each plainnet lease the
    neighbour, FDB and onlink route entries flanneld adds, per family on its device —
    read from plainnet's ``BackendData``/``BackendV6Data`` as flanneld reads them."""
    cluster = two_segment_cluster(cluster_factory, lab_name, "vxlan", nodes=3)
    key = lease_key(cluster, "node3")
    flannel_subnets = {v: subnet_of(cluster, "node3", v) for v in (4, 6)}
    cluster.stop_agent("node3")
    etcd_tool(cluster, "delete", key)
    assert agent_cleanup(cluster, "node3", keep_pods=True).returncode == 0
    host = cluster.lab.host("node3")
    node3_ip = {4: str(host.ipv4), 6: str(host.ipv6)}
    flannel_mac = {4: "aa:bb:cc:00:00:03", 6: "aa:bb:cc:00:06:03"}
    flannel_device = {4: "flannel.1", 6: "flannel-v6.1"}

    def on_node3(*command):
        cluster.lab.run("node3", list(command), check=True)

    for v in (4, 6):
        name, vtep = flannel_device[v], flannel_subnets[v].split("/")[0]
        on_node3(
            "ip", "link", "add", name, "address", flannel_mac[v], "mtu", "1430", "type",
            "vxlan", "id", "1", "local", node3_ip[v], "dev", "eth0", "dstport", "8472",
            "nolearning",
        )  # fmt: skip
        on_node3("ip", "addr", "add", f"{vtep}/{32 if v == 4 else 128}", "dev", name)
        on_node3("ip", "link", "set", name, "up")
    lease = {
        "PublicIP": node3_ip[4],
        "PublicIPv6": node3_ip[6],
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": flannel_mac[4]},
        "BackendV6Data": {"VNI": 1, "VtepMAC": flannel_mac[6]},
    }
    etcd_tool(cluster, "put", key, json.dumps(lease))
    for node in ("node1", "node2"):  # what flanneld adds on node3 from plainnet's leases
        published = json.loads(etcd_tool(cluster, "get", lease_key(cluster, node)))
        for v, data, public in ((4, "BackendData", "PublicIP"), (6, "BackendV6Data", "PublicIPv6")):
            assert published[data]["VNI"] == 1 and published[public], published
            mac, subnet = published[data]["VtepMAC"], subnet_of(cluster, node, v)
            gateway, name = subnet.split("/")[0], flannel_device[v]
            on_node3("ip", "neigh", "add", gateway, "lladdr", mac, "dev", name, "nud", "permanent")
            on_node3("bridge", "fdb", "add", mac, "dev", name, "dst", published[public])
            on_node3("ip", "route", "add", subnet, "via", gateway, "dev", name, "onlink")
    for node in ("node1", "node2"):
        for v, device in ((4, DEVICE), (6, DEVICE_V6)):
            wait_until(
                lambda n=node, v=v, d=device: (
                    fdb(cluster, n, d).get(flannel_mac[v]) == {node3_ip[v]}
                ),
                5,
                what=f"{node} to use the Flannel node's IPv{v} VTEP on {device}",
            )
    probes = probe_pods(cluster.pods)
    assert len(probes) == 3 * 2 * 2 and [p for p in probes if not p.ok] == []


def test_auto_redecides_when_this_nodes_networks_change(cluster_factory, lab_name):
    """auto decides per peer from this node's networks: node1 given an address in node2's
    segment treats node2 as on-link (direct route, no FDB entry for it); without the
    address node2 is encapsulated again. (Only the decision is checked here: the lab's
    segments are not really joined by that address.)"""
    cluster = two_segment_cluster(cluster_factory, lab_name, "auto", nodes=2)
    node2 = cluster.lab.host("node2")
    subnet, mac = subnet_of(cluster, "node2"), derived_mac(node2.ipv4)
    assert cluster.node_routes("node1")[subnet] == subnet.split("/")[0]  # through VXLAN
    assert mac in fdb(cluster, "node1")
    extra = [["10.250.2.200/24", "dev", "eth0"], ["fd00:250:2::200/64", "dev", "eth0", "nodad"]]
    for address in extra:  # both families: else IPv6 pods still need node2's VTEP
        cluster.lab.run("node1", ["ip", "addr", "add", *address], check=True)
    wait_until(
        lambda: (
            cluster.node_routes("node1").get(subnet) == str(node2.ipv4)
            and mac not in fdb(cluster, "node1")
        ),
        5,
        what="node1 to route node2 directly",
    )
    for address in extra:
        cluster.lab.run("node1", ["ip", "addr", "del", *address[:3]], check=True)
    wait_until(
        lambda: (
            cluster.node_routes("node1").get(subnet) == subnet.split("/")[0]
            and mac in fdb(cluster, "node1")
        ),
        5,
        what="node1 to encapsulate towards node2 again",
    )
    assert ping(cluster, pod_on(cluster, "node1"), pod_on(cluster, "node2").addresses[0])
