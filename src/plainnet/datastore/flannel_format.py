"""Flannel's etcd data format, so Flannel and plainnet nodes can share one etcd.

Pure encoding and decoding, no I/O. What Flannel (``pkg/subnet``, ``pkg/lease``) puts
in etcd under its prefix (default ``/coreos.com/network``):

- ``<prefix>/config``: the network config, JSON with ``Network``, ``SubnetLen``,
  ``SubnetMin``, ``SubnetMax``, ``EnableIPv4``, ``EnableIPv6``, ``IPv6Network``,
  ``IPv6SubnetLen``, ``Backend: {"Type": ...}`` — for vxlan also ``VNI``, ``Port`` and
  ``DirectRouting`` (plainnet's ``auto`` backend is exactly vxlan with DirectRouting).
- ``<prefix>/subnets/<a.b.c.d>-<len>`` (dual-stack: ``...-<len>&<v6>-<len6>``), one key
  per node, attached to an etcd lease with a TTL (24 h), JSON value with
  ``PublicIP``, ``PublicIPv6``, ``BackendType``, ``BackendData``, ``BackendV6Data``.
  A vxlan node's ``BackendData`` is ``{"VNI": 1, "VtepMAC": "0e:70:..."}``.

Flannel never allocates the first subnet of the network (``SubnetMin`` defaults to the
second) — nor does plainnet, so their allocations agree. Flannel has no node name in a
lease; plainnet adds ``PlainnetNode``, which Flannel's JSON decoding ignores. An
IPv6-only key (``<v6>-<len>``) is a plainnet extension Flannel cannot read.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address, ip_network
from typing import Any

from plainnet.datastore.records import ClusterNetwork, InvalidRecord, PeerRecord, Record
from plainnet.ipam.types import IPAddress, IPNetwork

DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_TTL_SECONDS = 24 * 3600
NODE_FIELD = "PlainnetNode"

_KEY = re.compile(
    r"^(?:(?P<v4>\d+\.\d+\.\d+\.\d+)-(?P<len4>\d+))?"
    r"(?:&?(?P<v6>[0-9a-f:]+)-(?P<len6>\d+))?\Z"
)
#: What the canonical writer produces for IPv4: decimal without leading zeros.
_OCTET = r"(?:0|[1-9][0-9]{0,2})"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}-(?:0|[1-9][0-9]?)\Z")


@dataclass(frozen=True)
class FlannelNetworkConfig:
    network: IPNetwork | None
    subnet_len: int
    ipv6_network: IPNetwork | None
    ipv6_subnet_len: int
    backend: str  # plainnet's name: vxlan with DirectRouting is "auto"
    subnet_min: IPAddress | None = None
    subnet_max: IPAddress | None = None
    #: The Backend section's settings the backend reads (``VNI`` -> ``vni``, ...).
    backend_options: dict[str, Any] | None = None

    @property
    def cluster_cidrs(self) -> list[IPNetwork]:
        return [n for n in (self.network, self.ipv6_network) if n is not None]

    @property
    def node_prefixes(self) -> dict[int, int]:
        return {4: self.subnet_len, 6: self.ipv6_subnet_len}

    def cluster_network(self) -> ClusterNetwork:
        return ClusterNetwork(
            tuple(self.cluster_cidrs),
            self.backend,
            dict(self.backend_options or {}),
            self.node_prefixes,
        )


#: Flannel's Backend section fields and the backend settings they carry.
BACKEND_FIELDS = {"VNI": "vni", "Port": "port"}


def parse_config(text: str) -> FlannelNetworkConfig:
    """Flannel's config JSON, with Flannel's defaults; ValueError on a bad one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"network config is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError("network config must be a JSON object")
    enable4 = document.get("EnableIPv4", True)
    enable6 = document.get("EnableIPv6", False)
    network = ip_network(document["Network"]) if enable4 and document.get("Network") else None
    network6 = (
        ip_network(document["IPv6Network"]) if enable6 and document.get("IPv6Network") else None
    )
    if network is None and network6 is None:
        raise ValueError("network config has neither Network nor IPv6Network")
    subnet_len = int(document.get("SubnetLen") or 0) or _default_len(network, 24, 22, 28)
    subnet_len6 = int(document.get("IPv6SubnetLen") or 0) or _default_len(network6, 64, 62, 124)
    backend_section = document.get("Backend") or {}
    if not isinstance(backend_section, dict):
        raise ValueError("Backend must be a JSON object")
    backend = str(backend_section.get("Type", "udp"))
    if backend == "vxlan" and backend_section.get("DirectRouting"):
        backend = "auto"
    options = {
        setting: backend_section[field]
        for field, setting in BACKEND_FIELDS.items()
        if backend_section.get(field)  # Flannel reads 0 as "the default"
    }
    return FlannelNetworkConfig(
        network=network,
        subnet_len=subnet_len,
        ipv6_network=network6,
        ipv6_subnet_len=subnet_len6,
        backend=str(backend),
        subnet_min=ip_address(document["SubnetMin"]) if document.get("SubnetMin") else None,
        subnet_max=ip_address(document["SubnetMax"]) if document.get("SubnetMax") else None,
        backend_options=options,
    )


def _default_len(network: IPNetwork | None, usual: int, big_enough: int, smallest: int) -> int:
    """Flannel's SubnetLen default: /24 (/64) when the network holds four of them, else
    the network split into four."""
    if network is None:
        return usual
    if network.prefixlen > smallest:
        raise ValueError(f"network {network} is too small (smallest useful: /{smallest})")
    return usual if network.prefixlen <= big_enough else network.prefixlen + 2


def render_config(
    cluster_cidrs: list[IPNetwork],
    node_prefixes: dict[int, int],
    backend: str,
    backend_options: dict[str, Any] | None = None,
) -> str:
    """The config JSON; ``auto`` is written as vxlan with DirectRouting, Flannel's name."""
    section: dict[str, Any] = {"Type": "vxlan" if backend == "auto" else backend}
    options = backend_options or {}
    section.update({f: options[o] for f, o in BACKEND_FIELDS.items() if o in options})
    if backend == "auto":
        section["DirectRouting"] = True
    document: dict[str, Any] = {"EnableIPv4": False, "EnableIPv6": False, "Backend": section}
    for cidr in cluster_cidrs:
        if cidr.version == 4:
            document.update(EnableIPv4=True, Network=str(cidr), SubnetLen=node_prefixes[4])
        else:
            document.update(EnableIPv6=True, IPv6Network=str(cidr), IPv6SubnetLen=node_prefixes[6])
    return json.dumps(document)


def subnet_key(subnets: tuple[IPNetwork, ...]) -> str:
    """The last path element of a lease key: ``10.5.34.0-24`` or
    ``10.5.34.0-24&fc00:0:0:1::-64``."""
    v4 = [s for s in subnets if s.version == 4]
    v6 = [s for s in subnets if s.version == 6]
    parts = [f"{s.network_address}-{s.prefixlen}" for s in v4 + v6]
    return "&".join(parts)


def parse_subnet_key(name: str) -> tuple[IPNetwork, ...]:
    match = _KEY.match(name)
    if not match or not (match["v4"] or match["v6"]):
        raise ValueError(f"{name!r} is not a subnet key")
    subnets: list[IPNetwork] = []
    if match["v4"]:
        subnets.append(IPv4Network((_ipv4_int(match["v4"]), int(match["len4"]))))
    if match["v6"]:
        subnets.append(ip_network(f"{match['v6']}/{match['len6']}"))
    return tuple(subnets)


def _ipv4_int(text: str) -> int:
    """A dotted quad as an integer, strictly (no leading zeros, four parts): the C
    parser, ~10x faster than :mod:`ipaddress`'s, on the path every list takes."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def _canonical(name: str, subnets: tuple[IPNetwork, ...]) -> bool:
    """Whether ``name`` is exactly what :func:`subnet_key` writes for ``subnets`` —
    checked without formatting the IPv4 part (every list parses every key)."""
    v4 = [s for s in subnets if s.version == 4]
    v6 = [s for s in subnets if s.version == 6]
    head, _, tail = name.partition("&")
    if v4 and not _CANONICAL_V4.match(head):
        return False
    if v6:
        part = tail if v4 else head
        return part == f"{v6[0].network_address}-{v6[0].prefixlen}" and (bool(tail) == bool(v4))
    return not tail


def lease_value(
    record_node: str,
    addresses: tuple[IPAddress, ...],
    backend: str,
    backend_data: dict[str, Any],
    backend_data_v6: dict[str, Any] | None = None,
) -> str:
    v4 = next((a for a in addresses if a.version == 4), None)
    v6 = next((a for a in addresses if a.version == 6), None)
    document: dict[str, Any] = {
        "PublicIP": str(v4) if v4 else "0.0.0.0",
        "PublicIPv6": str(v6) if v6 else None,
        "BackendType": backend,
        NODE_FIELD: record_node,
    }
    if backend_data:
        document["BackendData"] = backend_data
    if backend_data_v6:
        document["BackendV6Data"] = backend_data_v6
    return json.dumps(document)


def parse_lease(key: str, name: str, value: bytes, claimed_at: int, lease: int = 0) -> Record:
    """A lease key's last element and value as a :class:`PeerRecord`, or an
    :class:`InvalidRecord` saying what is wrong with it."""
    try:
        subnets = parse_subnet_key(name)
    except ValueError as exc:
        return InvalidRecord(key, str(exc), claimed_at, label="key-not-canonical")
    if not _canonical(name, subnets):
        return InvalidRecord(
            key=key,
            reason=f"key {name!r} is not in canonical form (expected {subnet_key(subnets)!r})",
            claimed_at=claimed_at,
            label="key-not-canonical",
        )
    try:
        document = json.loads(value)
        if not isinstance(document, dict):
            raise ValueError("value is not a JSON object")
        addresses: list[IPAddress] = []
        public = document.get("PublicIP")
        for field, given in (("PublicIP", public), ("PublicIPv6", document.get("PublicIPv6"))):
            if given is not None and not isinstance(given, str):
                raise ValueError(f"{field} is not a string")
        if public not in (None, "", "0.0.0.0"):
            try:
                address = IPv4Address(_ipv4_int(public))
            except ValueError:
                raise ValueError(f"PublicIP {public} is not an IPv4 address") from None
            addresses.append(address)
        public6 = document.get("PublicIPv6")
        if public6:
            address = ip_address(public6)
            if not isinstance(address, IPv6Address):
                raise ValueError(f"PublicIPv6 {public6} is not an IPv6 address")
            addresses.append(address)
        backend_data = document.get("BackendData") or {}
        backend_data_v6 = document.get("BackendV6Data") or {}
        for name, value in (("BackendData", backend_data), ("BackendV6Data", backend_data_v6)):
            if not isinstance(value, dict):
                raise ValueError(f"{name} is not a JSON object")
        node = document.get(NODE_FIELD) or (str(addresses[0]) if addresses else name)
        if not isinstance(node, str):
            raise ValueError(f"{NODE_FIELD} is not a string")
        return PeerRecord(
            key=key,
            node=str(node),
            subnets=subnets,
            addresses=tuple(addresses),
            backend=str(document.get("BackendType", "")),
            backend_data=backend_data,
            claimed_at=claimed_at,
            backend_data_v6=backend_data_v6,
            lease=lease,
        )
    except (ValueError, TypeError) as exc:
        return InvalidRecord(key=key, reason=str(exc), claimed_at=claimed_at)
