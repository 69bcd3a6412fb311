"""The kernel state plainnet manages, as plain values: what a backend wants, what a
dump read back, what a request changed and what the kernel refused. Pure.

These types are the agent's own, not the netlink codec's: the codec
(:mod:`plainnet.agent.netlink`) builds them from messages and messages from them, the
diff (:mod:`plainnet.agent.plan`) and the backends work on them, and a test's fake
kernel holds them — nothing above the codec sees a netlink byte.

Link-layer entries are keyed by device, so a backend with entries on several devices
(or none, like host-gw) needs nothing special: the kernel adapter reads the entries of
the devices the backend names, and the diff is the same dict diff for all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from plainnet.ipam.types import IPAddress, IPNetwork

#: A permanent neighbour entry: (device ifindex, address) -> MAC.
NeighbourKey = tuple[int, IPAddress]
#: A permanent FDB entry of a tunnel device: (device ifindex, MAC) -> destination(s).
FdbKey = tuple[int, str]
#: (IP version, gateway as an int, ifindex): plain ints, because ``ipaddress`` objects
#: hash in Python code and a resync hashes every key several times.
NexthopKey = tuple[int, int, int]


def nexthop_key(gateway: IPAddress, ifindex: int) -> NexthopKey:
    return (gateway.version, int(gateway), ifindex)


@dataclass(frozen=True)
class KernelRoute:
    """A route as plainnet reads it back (main table, plainnet's protocol)."""

    destination: IPNetwork
    nexthop_id: int | None
    gateway: IPAddress | None
    oif: int | None


@dataclass(frozen=True)
class KernelNexthop:
    id: int
    gateway: IPAddress | None
    oif: int | None
    protocol: int
    onlink: bool = False


@dataclass(frozen=True)
class InterfaceAddress:
    ifindex: int
    address: IPAddress
    prefixlen: int
    scope: int


@dataclass(frozen=True)
class DesiredRoute:
    """``destination via gateway dev ifindex [onlink]``, wanted because of ``node``."""

    destination: IPNetwork
    gateway: IPAddress
    ifindex: int
    node: str  # for log lines
    #: The gateway is covered by no connected route (an overlay's IPv4 VTEP address):
    #: the nexthop is marked "onlink".
    onlink: bool = False
    nexthop: NexthopKey = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nexthop", nexthop_key(self.gateway, self.ifindex))


@dataclass
class LinkEntries:
    """Permanent neighbour and FDB entries: what the kernel holds on the backend's
    devices (read back) or what the peers call for."""

    neighbours: dict[NeighbourKey, str] = field(default_factory=dict)
    fdb: dict[FdbKey, frozenset[IPAddress]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeerState:
    """What one peer needs in this node's kernel: a backend's whole answer for it. The
    entries are (key, value) pairs, not dicts: a peer has one or two, and the view
    keeps 20,000 of these."""

    routes: dict[IPNetwork, DesiredRoute]
    neighbours: tuple[tuple[NeighbourKey, str], ...] = ()
    fdb: tuple[tuple[FdbKey, IPAddress], ...] = ()


RequestKind = Literal["route", "nexthop", "neighbour", "fdb"]


@dataclass(frozen=True)
class KernelRefusal:
    """One request the kernel refused: what it was about and the errno it answered.
    A value, so callers decide by ``kind`` and ``subject``, never by parsing text."""

    kind: RequestKind
    subject: object  # the destination, nexthop id, neighbour or FDB key
    errno: int

    @property
    def message(self) -> str:
        return f"{self.kind} {_describe(self.subject)}: {os.strerror(self.errno)}"


def _describe(subject: object) -> str:
    if isinstance(subject, tuple) and len(subject) == 2:
        return f"{subject[1]} on device {subject[0]}"
    return str(subject)
