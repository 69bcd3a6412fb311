"""The CNI handler's logic against a fake dataplane: no root, no kernel. What it
hands out, what it reports, and that a failed ADD leaves nothing behind."""

import json
from ipaddress import ip_network

import pytest

from plainnet.cni.dataplane import (
    DataplaneError,
    ForeignDeviceError,
    HostVeth,
    PodLink,
    bridge_mac,
    host_veth_name,
    veth_alias,
)
from plainnet.cni.handler import CniHandler
from plainnet.cni.protocol import decode_request, encode_request
from plainnet.node_state import NodeState

NODE = NodeState(
    node="node1",
    cluster_cidrs=(ip_network("10.244.0.0/16"), ip_network("fd00:10::/48")),
    subnets=(ip_network("10.244.1.0/24"), ip_network("fd00:10:0:1::/64")),
    mtu=1450,
    backend="vxlan",
)
CONFIG = {"cniVersion": "1.1.0", "name": "plainnet", "type": "plainnet"}


class FakeDataplane:
    def __init__(self) -> None:
        self.veths: dict[str, str] = {}  # host veth -> alias
        self.fail_setup = False
        self.foreign: set[str] = set()  # bridge names another device holds
        self.masqueraded: list = []

    def ensure_bridge(self, bridge, gateways, mtu):
        if bridge in self.foreign:
            raise ForeignDeviceError(f"{bridge} is a physical device, not plainnet's pod bridge")
        self.bridge = (bridge, sorted(map(str, gateways)), mtu)
        return 7, bridge_mac(gateways)

    def attach_pod(
        self, bridge_index, mtu, netns, ifname, host_name, addresses, gateways, hairpin, network
    ):
        self.veths[host_name] = veth_alias(network)
        if self.fail_setup:
            raise DataplaneError("RTNETLINK answers: File exists")
        return PodLink(host_name, "aa:00:00:00:00:01", "aa:00:00:00:00:02")

    def remove_host_veth(self, host_name):
        return self.veths.pop(host_name, None) is not None

    def host_veths(self):
        return [HostVeth(name, alias) for name, alias in self.veths.items()]

    def check_pod(self, netns, ifname, host_name, bridge, addresses, gateways):
        self.checked = addresses
        return [] if host_name in self.veths else [f"node-side interface {host_name} is missing"]

    def ensure_masquerade(self, cluster_cidrs):
        self.masqueraded.append(cluster_cidrs)


@pytest.fixture
def handler(tmp_path):
    dataplane = FakeDataplane()
    return CniHandler(tmp_path, lambda: NODE, dataplane, tmp_path / "ipam")


def call(handler, command, container="c1", config=None, **env):
    values = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": "/run/netns/pod",
        "CNI_IFNAME": "eth0",
        **env,
    }
    # through the wire encoding, as the shim sends it
    decoded_env, stdin = decode_request(
        encode_request(values, json.dumps(config or CONFIG).encode())
    )
    code, out = handler.handle(decoded_env, stdin)
    return code, json.loads(out) if out.strip() else None


def test_add_hands_out_one_address_per_family_and_reports_the_bridge(handler):
    code, result = call(handler, "ADD")
    assert code == 0, result
    assert [ip["address"] for ip in result["ips"]] == ["10.244.1.2/24", "fd00:10:0:1::2/64"]
    assert {ip["gateway"] for ip in result["ips"]} == {"10.244.1.1", "fd00:10:0:1::1"}
    assert result["interfaces"][0] == {"name": "cbr0", "mac": "0a:58:0a:f4:01:01"}  # its own
    assert handler.dataplane.bridge[2] == 1450  # the node's pod MTU
    assert handler.dataplane.masqueraded == [list(NODE.cluster_cidrs)]
    assert call(handler, "ADD", "c2")[1]["ips"][0]["address"] == "10.244.1.3/24"


def test_a_failed_add_gives_its_addresses_back_and_removes_the_veth(handler):
    handler.dataplane.fail_setup = True
    code, error = call(handler, "ADD")
    assert (code, error["code"]) == (1, 101)
    assert "File exists" in error["details"]
    assert handler.dataplane.veths == {}
    assert [list(pool.reservations()) for pool in handler._pools(NODE)] == [[], []]


def test_without_the_agents_facts_add_says_try_again_later(tmp_path):
    handler = CniHandler(tmp_path, lambda: None, FakeDataplane())
    code, error = call(handler, "ADD")
    assert (code, error["code"]) == (1, 11)
    assert call(handler, "STATUS")[1]["code"] == 50


def test_del_releases_and_gc_removes_only_stale_plainnet_veths(handler):
    call(handler, "ADD", "c1")
    call(handler, "ADD", "c2")
    assert call(handler, "DEL", "c1") == (0, None)
    assert host_veth_name("c1", "eth0") not in handler.dataplane.veths
    assert call(handler, "ADD", "c3")[1]["ips"][0]["address"] == "10.244.1.4/24"  # next-fit
    gc = dict(CONFIG, **{"cni.dev/valid-attachments": [{"containerID": "c3", "ifname": "eth0"}]})
    assert call(handler, "GC", config=gc) == (0, None)
    assert set(handler.dataplane.veths) == {host_veth_name("c3", "eth0")}


def test_check_reports_what_the_dataplane_found(handler):
    _, result = call(handler, "ADD")
    assert call(handler, "CHECK", config=dict(CONFIG, prevResult=result)) == (0, None)
    handler.dataplane.veths.clear()
    code, error = call(handler, "CHECK", config=dict(CONFIG, prevResult=result))
    assert (code, error["code"]) == (1, 100) and "missing" in error["msg"]


def test_version_comes_from_the_protocol_definition(handler):
    assert call(handler, "VERSION")[1] == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["1.0.0", "1.1.0"],
    }


def test_a_bridge_name_another_device_holds_is_code_7_and_nothing_is_taken(handler):
    handler.dataplane.foreign.add("eth0")
    code, error = call(handler, "ADD", config=dict(CONFIG, bridge="eth0"))
    assert (code, error["code"]) == (1, 7) and "not plainnet's pod bridge" in error["msg"]
    assert [list(pool.reservations()) for pool in handler._pools(NODE)] == [[], []]
    assert handler.dataplane.veths == {}


def test_gc_of_one_network_never_touches_another(handler):
    other = dict(CONFIG, name="othernet")
    call(handler, "ADD", "p1")  # network plainnet
    call(handler, "ADD", "o1", config=other, CNI_IFNAME="net1")
    call(handler, "ADD", "o2", config=other, CNI_IFNAME="net1")
    # an ADD of othernet killed after making its veth, before attaching it: no alias yet
    call(handler, "ADD", "o3", config=other, CNI_IFNAME="net1")
    handler.dataplane.veths[host_veth_name("o3", "net1")] = ""
    valid = [{"containerID": "o1", "ifname": "net1"}]
    assert call(handler, "GC", config=dict(other, **{"cni.dev/valid-attachments": valid})) == (
        0,
        None,
    )
    held = {r.owner.container_id for pool in handler._pools(NODE) for r in pool.reservations()}
    assert held == {"p1", "o1"}, "plainnet's p1 untouched, othernet's stale o2 and o3 gone"
    assert set(handler.dataplane.veths) == {
        host_veth_name("p1", "eth0"),
        host_veth_name("o1", "net1"),
    }


def test_check_after_loopback_checks_only_its_own_interface(handler):
    _, result = call(handler, "ADD")
    # what libcni hands plainnet's CHECK after loopback: loopback's interface and address first
    loopback = {"interfaces": [{"name": "lo", "sandbox": "/run/netns/pod"}],
                "ips": [{"address": "127.0.0.1/8", "interface": 0}]}  # fmt: skip
    shift = len(loopback["interfaces"])
    chained = {
        **result,
        "interfaces": loopback["interfaces"] + result["interfaces"],
        "ips": loopback["ips"]
        + [{**ip, "interface": ip["interface"] + shift} for ip in result["ips"]],
    }
    assert call(handler, "CHECK", config=dict(CONFIG, prevResult=chained)) == (0, None)
    assert {str(a) for a in handler.dataplane.checked} == {"10.244.1.2/24", "fd00:10:0:1::2/64"}


def test_a_malformed_prev_result_is_never_copied_into_a_result(handler):
    code, error = call(handler, "ADD", config=dict(CONFIG, prevResult={"ips": "x"}))
    assert (code, error["code"]) == (1, 7)


def test_a_network_name_too_long_for_an_interface_alias_still_marks_its_veths():
    long_name = "n" * 400
    alias = veth_alias(long_name)
    assert len(alias.encode()) <= 255 and alias.startswith("plainnet/#")
    assert veth_alias("plainnet") == "plainnet/plainnet"
    assert alias != veth_alias("n" * 401)
