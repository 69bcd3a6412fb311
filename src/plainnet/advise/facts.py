"""What ``plainnet advise`` decides from: the cluster's nodes and what is known of the
network around them. Pure: built from a description file (:func:`from_description`)
or by the live-cluster adapter (:mod:`plainnet.advise.inspect`).

The description file (YAML; one example per situation in ``docs/advise/``)::

    nodes:                        # every node, with the network its address is on
      - name: node1
        address: 10.0.0.11/24     # the node's address / the prefix length of its network
        site: dc1                 # optional: where it stands (several sites: no one L2)
    cloud: aws                    # optional: aws, gce, azure (the nodes are VMs in a VPC)
    routeTableLimit: 50           # optional: routes the VPC route table may hold
    routers: not-controlled       # optional: controlled (you can run BGP with them),
                                  #   not-controlled, unknown (the default)
    security: strict              # optional: strict (pods must be isolated), normal
    clusterCIDR: 10.244.0.0/16    # optional: the pod address space
    serviceCIDR: 10.96.0.0/12     # optional

A file is hostile until read: its size is capped, it must be UTF-8 YAML, and every
field is checked (:class:`DescriptionError` names the first thing wrong).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import ip_interface, ip_network
from typing import Any

from plainnet.ipam.types import IPAddress, IPNetwork
from plainnet.text import printable

CLOUDS = ("aws", "gce", "azure")
#: Routes a VPC route table holds by default: AWS 50 (a quota you can raise), GCE 200
#: routes a network (custom routes quota), Azure 400 a route table.
DEFAULT_ROUTE_LIMITS = {"aws": 50, "gce": 200, "azure": 400}
ROUTERS = ("controlled", "not-controlled", "unknown")
MAX_DESCRIPTION_BYTES = 1 << 20
MAX_NODES = 100_000


class DescriptionError(ValueError):
    """A description file that cannot be read; the message says what to fix."""


@dataclass(frozen=True)
class NodeFacts:
    name: str
    addresses: tuple[IPAddress, ...]
    #: the networks the node's addresses are on (address + prefix length); empty where
    #: nobody could tell (a live cluster read from a machine that is not a node)
    networks: tuple[IPNetwork, ...] = ()
    pod_cidrs: tuple[IPNetwork, ...] = ()
    #: the cloud its providerID names ("aws", ...), or None
    cloud: str | None = None
    zone: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class Facts:
    nodes: tuple[NodeFacts, ...]
    #: every node is a VM in this cloud's VPC (None: not a cloud, or not all in one)
    cloud: str | None = None
    route_table_limit: int | None = None
    routers: str = "unknown"
    security: str = "normal"
    cluster_cidr: IPNetwork | None = None
    service_cidr: IPNetwork | None = None
    #: where the facts come from: "description <path>" or "cluster <server>"
    source: str = ""
    #: what the reader could not find out, in words (shown with the advice)
    unknowns: tuple[str, ...] = field(default=())


def _text(value: Any, what: str, limit: int = 253) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise DescriptionError(f"{what} must be a string of 1 to {limit} characters")
    return value


def from_description(text: bytes, source: str) -> Facts:
    """The facts a description file gives; :class:`DescriptionError` if it is not one."""
    import yaml  # only the description path needs it

    if len(text) > MAX_DESCRIPTION_BYTES:
        raise DescriptionError(f"{source} is larger than {MAX_DESCRIPTION_BYTES} bytes")
    try:
        document = yaml.safe_load(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise DescriptionError(f"{source} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DescriptionError(f"{source} is not YAML{where}") from None
    if not isinstance(document, dict):
        raise DescriptionError(f"{source}: expected a mapping with a 'nodes' list")
    known = {"nodes", "cloud", "routeTableLimit", "routers", "security", "clusterCIDR",
             "serviceCIDR"}  # fmt: skip
    unknown = sorted(str(k) for k in document if k not in known)
    if unknown:
        listed = ", ".join(sorted(known))
        raise DescriptionError(f"{source}: unknown field {printable(unknown[0], 60)} ({listed})")
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise DescriptionError(f"{source}: 'nodes' must be a list with at least one node")
    if len(raw_nodes) > MAX_NODES:
        raise DescriptionError(f"{source}: more than {MAX_NODES} nodes")
    nodes = tuple(_node(raw, i, source) for i, raw in enumerate(raw_nodes))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DescriptionError(f"{source}: node {printable(twice, 60)} is listed twice")
    cloud = document.get("cloud")
    if cloud in (None, "none"):
        cloud = None
    elif cloud not in CLOUDS:
        raise DescriptionError(f"{source}: cloud must be one of none, {', '.join(CLOUDS)}")
    limit = document.get("routeTableLimit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DescriptionError(f"{source}: routeTableLimit must be a positive integer")
    routers = document.get("routers", "unknown")
    if routers not in ROUTERS:
        raise DescriptionError(f"{source}: routers must be one of {', '.join(ROUTERS)}")
    security = document.get("security", "normal")
    if security not in ("strict", "normal"):
        raise DescriptionError(f"{source}: security must be strict or normal")
    return Facts(
        nodes=tuple(replace(n, cloud=cloud) for n in nodes),
        cloud=cloud,
        route_table_limit=limit,
        routers=routers,
        security=security,
        cluster_cidr=_cidr(document.get("clusterCIDR"), "clusterCIDR", source),
        service_cidr=_cidr(document.get("serviceCIDR"), "serviceCIDR", source),
        source=f"description {source}",
    )


def _cidr(value: Any, what: str, source: str) -> IPNetwork | None:
    if value is None:
        return None
    try:
        return ip_network(_text(value, what, 64))
    except ValueError:
        shown = printable(str(value), 64)
        raise DescriptionError(f"{source}: {what} {shown} is not a CIDR") from None


def _node(raw: Any, index: int, source: str) -> NodeFacts:
    where = f"{source}: node #{index + 1}"
    if not isinstance(raw, dict):
        raise DescriptionError(f"{where} must be a mapping with name and address")
    try:
        name = _text(raw.get("name"), "its name")
        given = raw.get("address")
        addresses = given if isinstance(given, list) else [given]
        texts = [_text(a, "its address", 64) for a in addresses]
        if not all("/" in t for t in texts):
            raise DescriptionError("give the address with its prefix length")
        interfaces = [ip_interface(t) for t in texts]
    except (DescriptionError, ValueError) as exc:
        detail = printable(str(exc), 200)
        raise DescriptionError(f"{where}: {detail} (like address: 10.0.0.11/24)") from None
    site = raw.get("site")
    return NodeFacts(
        name=name,
        addresses=tuple(i.ip for i in interfaces),
        networks=tuple(i.network for i in interfaces),
        site=_text(site, "site", 63) if site is not None else None,
    )
