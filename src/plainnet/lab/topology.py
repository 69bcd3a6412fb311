"""Declarative lab topologies and the pure plan computed from them.

A :class:`Topology` says what a lab looks like: L2 segments, routers joining segments,
hosts attached to a segment. :func:`plan` turns it — without touching the kernel — into
a :class:`LabPlan`: namespace and interface names, every address and every route. The
builder (:mod:`plainnet.lab.builder`) only carries the plan out, so everything that can
be wrong about a topology is found here, and tested here without root.

Layout in the kernel (all names carry the ``pn-`` prefix):

- ``pn-<lab>``: the *fabric* namespace. It holds one bridge ``br-<segment>`` per
  segment, and nothing else — no addresses. Keeping the bridges in a namespace of their
  own, rather than in the machine's namespace, means a lab adds nothing at all to the
  machine's own network, cannot be attached to its interfaces, and disappears with
  its namespaces.
- ``pn-<lab>-<host>``: one namespace per host or router. Its interface ``eth<n>`` is
  a veth whose other end ``<host>.<n>`` is a port of the segment's bridge.

Routes: a host gets a connected route for each of its segments and, through routers,
a route to every other segment of the lab — and nothing else: no default route, so a
lab host has no route to anything outside the lab.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plainnet.ipam.types import IPAddress, IPNetwork

PREFIX = "pn-"
#: Lab names have no dash, so ``pn-<lab>-<host>`` splits unambiguously into lab and host.
LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")
#: Host names fit the fabric port name ``<host>.<n>`` into the kernel's 15 characters.
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
#: Segment names fit the bridge name ``br-<segment>`` into 15 characters.
SEGMENT_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
MAX_INTERFACES = 10


def _check_name(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ValueError(
            f"{what} name {value!r} must match {pattern.pattern} "
            f"(lower-case letters and digits, short enough for kernel interface names)"
        )
    return value


class Segment(BaseModel):
    """One L2 segment: a bridge, with an IPv4 and optionally an IPv6 subnet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ipv4: IPv4Network
    ipv6: IPv6Network | None = None
    mtu: int = Field(default=1500, ge=1280, le=65535)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, SEGMENT_NAME, "segment")


class Router(BaseModel):
    """A namespace with an interface on each of its segments and forwarding on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    segments: list[str] = Field(min_length=2, max_length=MAX_INTERFACES)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, HOST_NAME, "router")


class Host(BaseModel):
    """A namespace attached to one segment. Addresses are picked from the segment's
    subnets unless given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    segment: str
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, HOST_NAME, "host")


class Topology(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "demo"
    segments: list[Segment] = Field(min_length=1)
    routers: list[Router] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, LAB_NAME, "lab")

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        segment_names = [segment.name for segment in self.segments]
        _unique(segment_names, "segment")
        _unique([r.name for r in self.routers] + [h.name for h in self.hosts], "host/router")
        known = set(segment_names)
        for router in self.routers:
            _unique(router.segments, f"segment of router {router.name}")
            for name in router.segments:
                if name not in known:
                    raise ValueError(f"router {router.name}: unknown segment {name!r}")
        for host in self.hosts:
            if host.segment not in known:
                raise ValueError(f"host {host.name}: unknown segment {host.segment!r}")
        plan(self)  # address conflicts and exhaustion surface as validation errors
        return self


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name {name!r} is used twice")
        seen.add(name)


# --- the plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class InterfacePlan:
    name: str  # inside the host namespace
    port: str  # the veth end on the bridge, inside the fabric namespace
    segment: str
    bridge: str
    mtu: int
    ipv4: IPv4Interface
    ipv6: IPv6Interface | None


@dataclass(frozen=True)
class RoutePlan:
    destination: IPNetwork
    gateway: IPAddress


@dataclass(frozen=True)
class HostPlan:
    name: str
    role: Literal["host", "router"]
    namespace: str
    interfaces: tuple[InterfacePlan, ...]
    routes: tuple[RoutePlan, ...]

    @property
    def forwarding(self) -> bool:
        return self.role == "router"

    @property
    def ipv4(self) -> IPv4Address:
        return self.interfaces[0].ipv4.ip

    @property
    def ipv6(self) -> IPv6Address | None:
        address = self.interfaces[0].ipv6
        return address.ip if address else None

    def addresses(self) -> list[IPAddress]:
        found: list[IPAddress] = []
        for interface in self.interfaces:
            found.append(interface.ipv4.ip)
            if interface.ipv6:
                found.append(interface.ipv6.ip)
        return found


@dataclass(frozen=True)
class SegmentPlan:
    name: str
    bridge: str
    mtu: int
    ipv4: IPv4Network
    ipv6: IPv6Network | None


@dataclass(frozen=True)
class LabPlan:
    name: str
    fabric_namespace: str
    segments: tuple[SegmentPlan, ...]
    hosts: tuple[HostPlan, ...]

    def host(self, name: str) -> HostPlan:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def namespaces(self) -> list[str]:
        return [self.fabric_namespace] + [host.namespace for host in self.hosts]


def fabric_namespace(lab: str) -> str:
    return f"{PREFIX}{lab}"


def host_namespace(lab: str, host: str) -> str:
    return f"{PREFIX}{lab}-{host}"


def lab_of_namespace(namespace: str) -> str | None:
    """The lab a ``pn-`` namespace belongs to, or None for a foreign name."""
    if not namespace.startswith(PREFIX):
        return None
    lab = namespace[len(PREFIX) :].split("-", 1)[0]
    return lab if LAB_NAME.match(lab) else None


class _AddressPicker:
    """Hands out segment addresses in order, skipping explicitly requested ones."""

    def __init__(self, network: IPv4Network | IPv6Network, requested: set[IPAddress]) -> None:
        self.network = network
        self.requested = requested
        self._next = 1

    def take(self, explicit: IPAddress | None, owner: str) -> IPv4Interface | IPv6Interface:
        if explicit is not None:
            if explicit not in self.network or explicit in (
                self.network.network_address,
                self.network.broadcast_address,
            ):
                raise ValueError(f"{owner}: address {explicit} is not usable in {self.network}")
            address = explicit
        else:
            while True:
                if self._next >= self.network.num_addresses - 1:
                    raise ValueError(
                        f"segment subnet {self.network} has no address left for {owner}"
                    )
                address = self.network.network_address + self._next
                self._next += 1
                if address not in self.requested:
                    break
        return (IPv4Interface if address.version == 4 else IPv6Interface)(
            f"{address}/{self.network.prefixlen}"
        )


def plan(topology: Topology) -> LabPlan:
    """Everything the builder creates for ``topology``; raises ValueError on conflicts."""
    segments = {segment.name: segment for segment in topology.segments}
    requested: dict[str, set[IPAddress]] = {name: set() for name in segments}
    for host in topology.hosts:
        for address in (host.ipv4, host.ipv6):
            if address is None:
                continue
            if address in requested[host.segment]:
                raise ValueError(f"address {address} is given to two hosts")
            requested[host.segment].add(address)
    pickers = {
        name: (
            _AddressPicker(segment.ipv4, requested[name]),
            _AddressPicker(segment.ipv6, requested[name]) if segment.ipv6 else None,
        )
        for name, segment in segments.items()
    }

    def interface(
        host: str, index: int, segment_name: str, ipv4: IPAddress | None, ipv6: IPAddress | None
    ) -> InterfacePlan:
        segment = segments[segment_name]
        picker4, picker6 = pickers[segment_name]
        if ipv6 is not None and picker6 is None:
            raise ValueError(f"host {host}: segment {segment_name} has no IPv6 subnet for {ipv6}")
        return InterfacePlan(
            name=f"eth{index}",
            port=f"{host}.{index}",
            segment=segment_name,
            bridge=f"br-{segment_name}",
            mtu=segment.mtu,
            ipv4=picker4.take(ipv4, host),  # type: ignore[arg-type]
            ipv6=picker6.take(ipv6, host) if picker6 else None,  # type: ignore[arg-type]
        )

    # Routers first, so they get the low addresses (.1, .2, ...) a reader expects.
    attached: list[tuple[str, Literal["host", "router"], tuple[InterfacePlan, ...]]] = []
    for router in topology.routers:
        attached.append(
            (
                router.name,
                "router",
                tuple(
                    interface(router.name, index, name, None, None)
                    for index, name in enumerate(router.segments)
                ),
            )
        )
    for host in topology.hosts:
        attached.append(
            (host.name, "host", (interface(host.name, 0, host.segment, host.ipv4, host.ipv6),))
        )

    hosts = tuple(
        HostPlan(
            name=name,
            role=role,
            namespace=host_namespace(topology.name, name),
            interfaces=interfaces,
            routes=tuple(_routes_between_segments(interfaces, attached, segments)),
        )
        for name, role, interfaces in attached
    )
    return LabPlan(
        name=topology.name,
        fabric_namespace=fabric_namespace(topology.name),
        segments=tuple(
            SegmentPlan(s.name, f"br-{s.name}", s.mtu, s.ipv4, s.ipv6) for s in topology.segments
        ),
        hosts=hosts,
    )


def _routes_between_segments(
    own: tuple[InterfacePlan, ...],
    attached: list[tuple[str, str, tuple[InterfacePlan, ...]]],
    segments: dict[str, Segment],
) -> list[RoutePlan]:
    """Routes to every segment this host is not on, via the first router of a shortest
    path (breadth-first over segments, routers as edges)."""
    routers = [interfaces for _, role, interfaces in attached if role == "router"]
    own_segments = {interface.segment for interface in own}
    first_hop: dict[str, InterfacePlan] = {}  # segment -> router interface on our segment
    queue: deque[tuple[str, InterfacePlan | None]] = deque((s, None) for s in sorted(own_segments))
    visited = set(own_segments)
    while queue:
        segment, hop = queue.popleft()
        for router in routers:
            on_segment = [i for i in router if i.segment == segment]
            if not on_segment:
                continue
            for neighbour in router:
                if neighbour.segment in visited:
                    continue
                visited.add(neighbour.segment)
                via = hop or on_segment[0]
                first_hop[neighbour.segment] = via
                queue.append((neighbour.segment, via))
    routes: list[RoutePlan] = []
    for segment_name, via in sorted(first_hop.items()):
        segment = segments[segment_name]
        routes.append(RoutePlan(segment.ipv4, via.ipv4.ip))
        if segment.ipv6 is not None and via.ipv6 is not None:
            routes.append(RoutePlan(segment.ipv6, via.ipv6.ip))
    return routes


# --- ready-made topologies -------------------------------------------------------------


def segment_subnets(index: int, ipv6: bool) -> dict[str, IPv4Network | IPv6Network | None]:
    """The underlay subnets plainnet's ready-made labs use for segment ``index``.
    They exist only inside lab namespaces."""
    return {
        "ipv4": IPv4Network(f"10.250.{index}.0/24"),
        "ipv6": IPv6Network(f"fd00:250:{index:x}::/64") if ipv6 else None,
    }


def single_segment(
    name: str = "demo", hosts: int = 3, *, ipv6: bool = True, host_prefix: str = "host"
) -> Topology:
    """``hosts`` hosts on one L2 segment — scenario 1's underlay."""
    return Topology(
        name=name,
        segments=[Segment(name="lan", **segment_subnets(0, ipv6))],
        hosts=[Host(name=f"{host_prefix}{i}", segment="lan") for i in range(1, hosts + 1)],
    )


def two_segments(
    name: str = "demo", hosts: int = 4, *, ipv6: bool = True, host_prefix: str = "host"
) -> Topology:
    """Two L2 segments joined by a router namespace; hosts alternate between them —
    scenario 5's underlay (no shared L2, routers plainnet cannot configure)."""
    return Topology(
        name=name,
        segments=[
            Segment(name="lana", **segment_subnets(1, ipv6)),
            Segment(name="lanb", **segment_subnets(2, ipv6)),
        ],
        routers=[Router(name="router", segments=["lana", "lanb"])],
        hosts=[
            Host(name=f"{host_prefix}{i}", segment="lana" if i % 2 else "lanb")
            for i in range(1, hosts + 1)
        ],
    )


def cloud_vpc(
    name: str = "demo", hosts: int = 4, *, ipv6: bool = False, host_prefix: str = "host"
) -> Topology:
    """A VPC's subnets: two segments joined by the router ``vpc``, whose routes a lab
    adapter keeps equal to the emulated cloud's route tables (:mod:`plainnet.lab.vpc`);
    hosts alternate between the subnets — scenario 2's underlay. IPv4 only (the
    emulated VPC routes no IPv6)."""
    return Topology(
        name=name,
        segments=[
            Segment(name="subneta", **segment_subnets(1, False)),
            Segment(name="subnetb", **segment_subnets(2, False)),
        ],
        routers=[Router(name="vpc", segments=["subneta", "subnetb"])],
        hosts=[
            Host(name=f"{host_prefix}{i}", segment="subneta" if i % 2 else "subnetb")
            for i in range(1, hosts + 1)
        ],
    )


TOPOLOGIES = {"single-segment": single_segment, "two-segments": two_segments, "cloud": cloud_vpc}
