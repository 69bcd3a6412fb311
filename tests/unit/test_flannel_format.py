"""Flannel's etcd format: keys, lease values and network config, both directions."""

import json
from ipaddress import ip_address, ip_network

import pytest

from plainnet.datastore import flannel_format as fmt
from plainnet.datastore.records import InvalidRecord, PeerRecord


@pytest.mark.parametrize(
    ("name", "subnets"),
    [
        ("10.5.34.0-24", ("10.5.34.0/24",)),
        ("10.5.34.0-24&fc00:0:0:1::-64", ("10.5.34.0/24", "fc00:0:0:1::/64")),
        ("fd00:10:244:1::-64", ("fd00:10:244:1::/64",)),
    ],
)
def test_subnet_keys_round_trip(name, subnets):
    parsed = fmt.parse_subnet_key(name)
    assert tuple(str(s) for s in parsed) == subnets
    assert fmt.subnet_key(parsed) == name


def test_a_lease_written_by_flannel_is_read():
    # what flanneld's host-gw backend writes (no BackendData, no node name)
    value = b'{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"host-gw"}'
    record = fmt.parse_lease("/coreos.com/network/subnets/10.5.34.0-24", "10.5.34.0-24", value, 7)
    assert isinstance(record, PeerRecord)
    assert record.subnets == (ip_network("10.5.34.0/24"),)
    assert record.addresses == (ip_address("192.168.1.10"),)
    assert record.node == "192.168.1.10"
    assert record.claimed_at == 7


def test_plainnet_lease_value_is_what_flannel_expects():
    value = json.loads(
        fmt.lease_value("node1", (ip_address("10.0.0.1"), ip_address("fd00::1")), "host-gw", {})
    )
    assert value == {
        "PublicIP": "10.0.0.1",
        "PublicIPv6": "fd00::1",
        "BackendType": "host-gw",
        "PlainnetNode": "node1",
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "Expecting value"),
        (b'{"PublicIP": "fd00::1"}', "not an IPv4 address"),
        (b'{"PublicIP": "10.0.0.1", "PublicIPv6": "10.0.0.2"}', "not an IPv6 address"),
        (b'{"PublicIP": "banana"}', "PublicIP banana is not an IPv4 address"),
        (b'["a list"]', "not a JSON object"),
        (b'{"PublicIP": 167772161}', "PublicIP is not a string"),  # was read as 10.0.0.1
        (b'{"PublicIP": "10.0.0.1", "PublicIPv6": 1}', "PublicIPv6 is not a string"),
        (b'{"PublicIP": "10.0.0.1", "PlainnetNode": {"a": 1}}', "PlainnetNode is not a string"),
        (b'{"PublicIP": "10.0.0.1", "x": "\xff\xfe"}', "decode"),  # not UTF-8
    ],
)
def test_bad_lease_values_are_invalid_records(value, reason):
    record = fmt.parse_lease("k", "10.5.34.0-24", value, 1)
    assert isinstance(record, InvalidRecord)
    assert reason in record.reason


def test_bad_key_is_an_invalid_record():
    record = fmt.parse_lease("k", "not-a-subnet", b"{}", 1)
    assert isinstance(record, InvalidRecord)


@pytest.mark.parametrize(
    "name",
    [
        "10.5.34.0-24\n",  # a trailing newline (the old pattern's $ let it through)
        "10.5.34.0-024",  # a zero-padded prefix length
        "010.5.34.0-24",
        "10.5.34.0-24&FD00:0:0:1::-64",  # upper-case hex
        "10.5.34.0-24&fd00:0:0:1:0:0:0:0-64",  # not the compressed form
        "fd00:0:0:1::-64&10.5.34.0-24",  # families swapped
    ],
)
def test_keys_the_canonical_writer_would_not_produce_are_refused(name):
    value = b'{"PublicIP": "10.0.0.1", "BackendType": "host-gw"}'
    record = fmt.parse_lease("k", name, value, 1)
    assert isinstance(record, InvalidRecord), record
    assert record.label == "key-not-canonical"


def test_config_defaults_follow_flannel():
    config = fmt.parse_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}')
    assert config.cluster_cidrs == [ip_network("10.5.0.0/16")]
    assert config.subnet_len == 24
    assert config.backend == "host-gw"
    small = fmt.parse_config('{"Network": "10.5.0.0/24"}')
    assert small.subnet_len == 26  # the network split into four
    assert small.backend == "udp"


def test_config_round_trip_dual_stack():
    text = fmt.render_config(
        [ip_network("10.244.0.0/16"), ip_network("fd00:10::/48")], {4: 24, 6: 64}, "host-gw"
    )
    config = fmt.parse_config(text)
    assert config.cluster_cidrs == [ip_network("10.244.0.0/16"), ip_network("fd00:10::/48")]
    assert config.node_prefixes == {4: 24, 6: 64}
