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


@pytest.mark.parametrize(
    "container_id",
    ["with space", "a;b", "../../../etc/passwd", "line\nforged", "ünïcode", "-leading", "x" * 1025],
)
def test_container_ids_the_reference_refuses_are_code_4(container_id):
    with pytest.raises(CniError) as caught:
        request({**ENV, "CNI_CONTAINERID": container_id})
    assert caught.value.code == 4 and "invalid characters in containerID" in caught.value.msg
    assert "\n" not in caught.value.msg


@pytest.mark.parametrize("ifname", ["eth 0", "eth:0", ".", "..", "a/b", "tab\there", "x" * 16])
def test_interface_names_the_reference_refuses_are_code_4(ifname):
    with pytest.raises(CniError) as caught:
        request({**ENV, "CNI_IFNAME": ifname})
    assert caught.value.code == 4 and "CNI_IFNAME" in caught.value.msg


def test_a_variable_that_is_not_utf8_is_code_4_by_name():
    from plainnet.cni.protocol import decode_request, encode_request

    raw = encode_request({"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0", "CNI_NETNS": "x"}, b"{}")
    env, _ = decode_request(raw.replace(b"CNI_NETNS=x", b"CNI_NETNS=/run/\xff\xfe"))
    with pytest.raises(CniError) as caught:
        parse_request(env, json.dumps(CONFIG).encode())
    assert caught.value.code == 4 and caught.value.msg == "CNI_NETNS is not valid UTF-8"


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        ("", True),
        ("IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar", True),
        ("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web", True),
        ("IgnoreUnknown=1;garbage", True),
        ("garbage", False),
        ("FOO=bar", False),
        ("=x", False),
    ],
)
def test_cni_args_follow_the_reference(args, ok):
    if ok:
        assert request({**ENV, "CNI_ARGS": args}).args == args
    else:
        with pytest.raises(CniError) as caught:
            request({**ENV, "CNI_ARGS": args})
        assert caught.value.code == 4 and "CNI_ARGS" in caught.value.msg


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({**CONFIG, "prevResult": {"ips": "x"}}, "ips must be a list"),
        ({**CONFIG, "prevResult": {"ips": [{"address": "nonsense"}]}}, "no valid address"),
        (
            {**CONFIG, "prevResult": {"ips": [{"address": "10.0.0.2/24", "interface": 3}]}},
            "names no interface",
        ),
        ({**CONFIG, "prevResult": {"interfaces": [{"mac": "x"}]}}, "has no name"),
        ({**CONFIG, "prevResult": {"routes": [{"gw": "10.0.0.1"}]}}, "no valid dst"),
        ({**CONFIG, "prevResult": {"dns": []}}, "dns must be an object"),
        ({**CONFIG, "prevResult": []}, "not an object"),
        ({k: v for k, v in CONFIG.items() if k != "type"}, "no type"),
        ({**CONFIG, "name": "bad name;"}, "invalid characters in network name"),
    ],
)  # fmt: skip
def test_malformed_configuration_is_code_7(config, words):
    with pytest.raises(CniError) as caught:
        request(config=config)
    assert caught.value.code == 7 and words in caught.value.msg


def test_the_fallback_client_is_valid_python_with_every_constant():
    """It rendered its constants inside a string literal: not Python at all."""
    from plainnet.cni.protocol import python_client

    source = python_client()
    code = compile(source, "plainnet", "exec")
    for name in ("SOCKET_NAME", "MAX_REQUEST", "PLUGIN_NOT_AVAILABLE", "TRY_AGAIN_LATER"):
        assert name in code.co_names
