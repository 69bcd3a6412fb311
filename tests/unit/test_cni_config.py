"""CNI request validation: each bad input gets the spec's error code. Pure."""

import json

import pytest

from plainnet.cni.config import parse_request
from plainnet.cni.errors import CniError
from plainnet.cni.install import conflist

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
}
CONFIG = {"cniVersion": "1.0.0", "name": "plainnet", "type": "plainnet"}


def request(env=None, config=None, raw=None):
    stdin = raw if raw is not None else json.dumps(CONFIG if config is None else config).encode()
    return parse_request(ENV if env is None else env, stdin)


def test_a_good_request():
    parsed = request()
    assert (parsed.command, parsed.container_id, parsed.ifname) == ("ADD", "c1", "eth0")
    assert parsed.config.bridge == "cbr0" and parsed.config.hairpin and parsed.config.masquerade


@pytest.mark.parametrize(
    ("env", "config", "raw", "code", "words"),
    [
        (None, None, b"{not json", 6, "not JSON"),
        (None, None, b"[1, 2]", 6, "JSON object"),
        (None, {**CONFIG, "cniVersion": "0.3.1"}, None, 1, "not supported"),
        (None, {"cniVersion": "1.0.0"}, None, 7, "no name"),
        (None, {**CONFIG, "mtu": 10}, None, 7, "mtu"),
        (None, {**CONFIG, "bridge": "a-very-long-bridge-name"}, None, 7, "bridge"),
        (None, {**CONFIG, "cni.dev/valid-attachments": [{"x": 1}]}, None, 7, "valid-attachments"),
        ({**ENV, "CNI_COMMAND": "FROB"}, None, None, 4, "CNI_COMMAND"),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, None, None, 4, "CNI_NETNS"),
        ({**ENV, "CNI_IFNAME": "x" * 16}, None, None, 4, "CNI_IFNAME"),
    ],
)
def test_bad_requests_get_the_specs_error_code(env, config, raw, code, words):
    with pytest.raises(CniError) as caught:
        request(env, config, raw)
    assert caught.value.code == code
    assert words in caught.value.msg + caught.value.details


def test_del_needs_no_netns():
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
    assert request(env).netns == ""


def test_the_installed_conflist_chains_portmap_after_plainnet():
    chain = conflist()
    assert [p["type"] for p in chain["plugins"]] == ["plainnet", "portmap"]
    assert chain["plugins"][1]["capabilities"] == {"portMappings": True}
