"""Configuration validation: one clear line per bad value."""

import pytest

from plainnet.config import load_network_config
from plainnet.errors import ConfigError


def test_valid_dual_stack_config():
    config = load_network_config({"cluster_cidrs": ["10.244.0.0/16", "fd00:10::/48"]})
    assert [str(c) for c in config.cluster_cidrs] == ["10.244.0.0/16", "fd00:10::/48"]
    assert config.node_prefixes == {4: 24, 6: 64}


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ({"cluster_cidrs": ["10.0.0.0/33"]}, "cluster CIDR 10.0.0.0/33: not a valid network"),
        (
            {"cluster_cidrs": ["10.0.0.1/8"]},
            "cluster CIDR 10.0.0.1/8: has host bits set, did you mean 10.0.0.0/8?",
        ),
        ({"cluster_cidrs": ["banana"]}, "cluster CIDR banana: not a valid network"),
        (
            {"cluster_cidrs": ["10.0.0.0/8", "10.1.0.0/16"]},
            "at most one cluster CIDR per address family",
        ),
        (
            {"cluster_cidrs": ["10.0.0.0/16"], "node_mask_ipv4": 16},
            "node mask /16 must be longer than the mask of cluster CIDR 10.0.0.0/16",
        ),
        (
            {"cluster_cidrs": ["10.0.0.0/16"], "node_mask_ipv4": 40},
            "IPv4 node mask 40: Input should be less than or equal to 32",
        ),
        ({"cluster_cidrs": ["10.0.0.0/16"], "clusterCIDR": "x"}, "unknown setting 'clusterCIDR'"),
    ],
)
def test_bad_values_give_one_line(values, line):
    with pytest.raises(ConfigError) as caught:
        load_network_config(values)
    message = str(caught.value)
    assert message.startswith(line)
    assert "\n" not in message
