"""The CNI request: environment and network configuration, validated. Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from ipaddress import ip_interface
from typing import Any

from plainnet.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    CniError,
)
from plainnet.cni.protocol import SUPPORTED_VERSIONS
from plainnet.text import printable

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
DEFAULT_BRIDGE = "cbr0"

#: libcni's rule for container ids and network names (``ValidateContainerID``,
#: ``ValidateNetworkName``); the length cap is plainnet's (ids are 64 hex digits).
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_ID_LENGTH = 1024
#: The ``CNI_ARGS`` keys a runtime sends that plainnet knows (and ignores).
KNOWN_ARGS = frozenset(
    {"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID",
     "K8S_POD_UID"}
)  # fmt: skip


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
    """The request, or a :class:`CniError` with the spec's code for what is wrong.
    ``env`` values decoded with ``surrogateescape`` (:func:`~plainnet.cni.protocol.
    decode_request`): a variable that is not UTF-8 is refused by name."""
    for name, value in env.items():
        if name.startswith("CNI_") and not _is_utf8(name + value):
            shown = name.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise CniError(INVALID_ENVIRONMENT, f"{shown} is not valid UTF-8")
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_COMMAND {printable(command, 40)} is not one of {', '.join(COMMANDS)}",
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
    if request.container_id:
        check_container_id(request.container_id)
    if request.ifname:
        check_interface_name(request.ifname)
    check_args(request.args)
    return request


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_container_id(container_id: str) -> None:
    if len(container_id) > MAX_ID_LENGTH or not _NAME.fullmatch(container_id):
        raise CniError(
            INVALID_ENVIRONMENT,
            f"invalid characters in containerID {printable(container_id, 80)}",
            "a container id is letters, digits, '_', '.' and '-', starting with a letter "
            f"or digit, at most {MAX_ID_LENGTH} characters",
        )


def check_interface_name(ifname: str) -> None:
    """libcni's ``ValidateInterfaceName``: 1-15 characters, not ``.`` or ``..``, no
    ``/``, ``:`` or white space — and, plainnet's own, nothing unprintable."""
    problem = None
    if len(ifname) > 15:
        problem = "is longer than 15 characters"
    elif ifname in (".", ".."):
        problem = "is . or .."
    elif any(c in "/:" or c.isspace() or not c.isprintable() for c in ifname):
        problem = "contains '/', ':', white space or an unprintable character"
    if problem:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {printable(ifname, 40)} {problem}")


def check_args(args: str) -> None:
    """``CNI_ARGS``: ``K=V`` pairs separated by ``;``, as the reference plugins read them
    (``types.LoadArgs``): a pair without ``=`` or a key plainnet does not know is an
    error, unless the runtime sets ``IgnoreUnknown=1`` (which Kubernetes runtimes do)."""
    if not args:
        return
    pairs = [pair.split("=", 1) for pair in args.split(";")]
    ignore = any(len(p) == 2 and p[0] == "IgnoreUnknown" and p[1].lower() in ("1", "true")
                 for p in pairs)  # fmt: skip
    if ignore:
        return
    for pair in pairs:
        if len(pair) != 2 or not pair[0]:
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_ARGS: invalid pair {printable('='.join(pair), 80)}",
                "CNI_ARGS are KEY=VALUE pairs separated by ';'",
            )
        if pair[0] not in KNOWN_ARGS:
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_ARGS: unknown key {printable(pair[0], 80)}",
                "set IgnoreUnknown=1 to pass keys plainnet does not read",
            )


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
    if len(name) > MAX_ID_LENGTH or not _NAME.fullmatch(name):
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"invalid characters in network name {printable(name, 80)}",
            "a network name is letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    kind = document.get("type")
    if not isinstance(kind, str) or not kind:
        raise CniError(INVALID_NETWORK_CONFIG, "network configuration has no type")
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
    if prev is not None:
        check_prev_result(prev)
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


def check_prev_result(prev: object) -> None:
    """The shape of a CNI 1.x result, as far as plainnet copies or reads it: a malformed
    one is refused, never passed on (``{"ips": "x"}`` went into the ADD's result)."""

    def refuse(what: str) -> CniError:
        return CniError(INVALID_NETWORK_CONFIG, f"prevResult is malformed: {what}")

    if not isinstance(prev, dict):
        raise refuse("not an object")
    for key in ("interfaces", "ips", "routes"):
        entries = prev.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise refuse(f"{key} must be a list of objects")
    if not isinstance(prev.get("dns", {}), dict):
        raise refuse("dns must be an object")
    interfaces = prev.get("interfaces", [])
    for entry in interfaces:
        if not isinstance(entry.get("name"), str):
            raise refuse("an interface has no name")
    for entry in prev.get("ips", []):
        try:
            ip_interface(entry["address"])
        except (KeyError, TypeError, ValueError):
            raise refuse(f"ips entry {printable(str(entry), 80)} has no valid address") from None
        index = entry.get("interface")
        if index is not None and (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < len(interfaces)
        ):
            raise refuse(f"ips entry {entry['address']} names no interface of the result")
    for entry in prev.get("routes", []):
        try:
            ip_interface(entry["dst"])
        except (KeyError, TypeError, ValueError):
            raise refuse(f"routes entry {printable(str(entry), 80)} has no valid dst") from None
