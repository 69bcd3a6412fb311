"""The CNI request: environment and network configuration, validated. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from plainnet.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    CniError,
)
from plainnet.cni.protocol import SUPPORTED_VERSIONS

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
DEFAULT_BRIDGE = "cbr0"


@dataclass(frozen=True)
class NetConf:
    """The fields of the network configuration plainnet reads."""

    cni_version: str
    name: str
    bridge: str = DEFAULT_BRIDGE
    hairpin: bool = True
    masquerade: bool = True
    mtu: int | None = None
    prev_result: dict[str, Any] | None = None
    valid_attachments: list[tuple[str, str]] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class CniRequest:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    config: NetConf


def parse_request(env: dict[str, str], stdin: bytes) -> CniRequest:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of {', '.join(COMMANDS)}"
        )
    config = parse_netconf(stdin)
    request = CniRequest(
        command,
        env.get("CNI_CONTAINERID", ""),
        env.get("CNI_NETNS", ""),
        env.get("CNI_IFNAME", ""),
        env.get("CNI_ARGS", ""),
        config,
    )
    required = {
        "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    }.get(command, ())
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)}")
    if request.ifname and (len(request.ifname) > 15 or "/" in request.ifname):
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_IFNAME {request.ifname!r} is not a valid interface name"
        )
    return request


def parse_netconf(stdin: bytes) -> NetConf:
    try:
        document = json.loads(stdin)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CniError(DECODE_FAILURE, "network configuration is not JSON", str(exc)) from None
    if not isinstance(document, dict):
        raise CniError(DECODE_FAILURE, "network configuration must be a JSON object")
    version = document.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_NETWORK_CONFIG, "network configuration has no name")
    bridge = document.get("bridge", DEFAULT_BRIDGE)
    if not isinstance(bridge, str) or not 0 < len(bridge) <= 15:
        raise CniError(INVALID_NETWORK_CONFIG, f"bridge {bridge!r} is not a valid interface name")
    mtu = document.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or not 576 <= mtu <= 65535):
        raise CniError(INVALID_NETWORK_CONFIG, f"mtu {mtu!r} must be an integer 576-65535")
    for flag in ("hairpin", "masquerade"):
        if not isinstance(document.get(flag, True), bool):
            raise CniError(INVALID_NETWORK_CONFIG, f"{flag} must be true or false")
    prev = document.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(INVALID_NETWORK_CONFIG, "prevResult must be an object")
    attachments = document.get("cni.dev/valid-attachments")
    valid = None
    if attachments is not None:
        try:
            valid = [(str(a["containerID"]), str(a["ifname"])) for a in attachments]
        except (TypeError, KeyError) as exc:
            raise CniError(
                INVALID_NETWORK_CONFIG,
                "cni.dev/valid-attachments must be a list of {containerID, ifname}",
                str(exc),
            ) from None
    return NetConf(
        cni_version=version,
        name=name,
        bridge=bridge,
        hairpin=document.get("hairpin", True),
        masquerade=document.get("masquerade", True),
        mtu=mtu,
        prev_result=prev,
        valid_attachments=valid,
        raw=document,
    )
