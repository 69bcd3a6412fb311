"""The interface every routing backend implements.

A backend is everything one routing mechanism is: the record type it publishes and
the backend data that goes with it, the checks a peer record must pass to be routable
by it, the kernel state one peer needs (routes, and where it has them, neighbour and
FDB entries), its devices (prepared before routes use them, removed on uninstall or a
backend switch) and the MTU pods get. The agent loop only ever talks to this interface;
a new mechanism is a new folder under ``backends/`` and one entry in the table in
:mod:`plainnet.agent.backends`.

Pure, except :meth:`Backend.prepare` and :meth:`Backend.remove`, which the reconciler
runs on its kernel thread (never on the asyncio loop).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from plainnet.agent.kernel_model import PeerState
from plainnet.agent.local_networks import LocalNetwork
from plainnet.datastore.records import PeerRecord
from plainnet.ipam.types import IPAddress, IPNetwork


@dataclass(frozen=True)
class NodeIdentity:
    """This node, as a backend sees it. ``addresses[0]`` is its primary address (the
    one an overlay's packets leave from), on interface ``uplink``."""

    name: str
    addresses: tuple[IPAddress, ...]
    uplink: LocalNetwork
    uplink_mtu: int
    subnets: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class PeerProblem:
    """Why a backend cannot route to a peer: ``reason`` is the refusal's metric label,
    ``detail`` the log line's explanation."""

    reason: str
    detail: str


@dataclass(frozen=True)
class PublishedData:
    """What this node's record carries for its backend: Flannel's ``BackendData`` and
    ``BackendV6Data``."""

    v4: dict[str, Any]
    v6: dict[str, Any]


class LinkLookup(Protocol):
    def link_index(self, name: str) -> int | None: ...


class Backend(ABC):
    """One routing mechanism, configured for a cluster. Instances are values: equal
    settings compare equal, so a peer view built for one is valid for the other."""

    name: ClassVar[str]
    #: What records of nodes running this backend say their backend is.
    record_type: ClassVar[str]
    #: Devices this backend owns, by name (never counted as networks of the node).
    device_names: ClassVar[tuple[str, ...]] = ()

    def published_data(self, node: NodeIdentity) -> PublishedData:
        return PublishedData({}, {})

    def pod_mtu(self, node: NodeIdentity) -> int:
        return node.uplink_mtu

    def prepare(self, node: NodeIdentity, kernel: LinkLookup) -> Hashable:
        """Create or repair this backend's devices; returns its *links*: whatever of the
        kernel the backend's pure methods need (device ifindexes), as a hashable value.
        A change of links invalidates the peer view. Runs on the kernel thread."""
        return None

    def remove(self, kernel: LinkLookup) -> list[str]:
        """Remove this backend's devices; returns the names of those that were there."""
        return []

    def entry_devices(self, links: Hashable) -> frozenset[int]:
        """The devices whose permanent neighbour and FDB entries are this backend's."""
        return frozenset()

    def identities(self, peer: PeerRecord, links: Hashable) -> tuple[tuple[str, Hashable], ...]:
        """What of an accepted ``peer`` no other peer may share beyond its node
        addresses, as (kind, value): the later claim of a shared one is refused
        (``duplicate-<kind>``)."""
        return ()

    @abstractmethod
    def check_peer(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerProblem | None:
        """Whether this node can route to ``peer`` (its generic checks have passed)."""

    @abstractmethod
    def peer_state(
        self, peer: PeerRecord, local: Sequence[LocalNetwork], links: Hashable
    ) -> PeerState:
        """What an accepted ``peer`` needs in this node's kernel."""


@dataclass(frozen=True)
class RoutingContext:
    """Everything a routing decision depends on besides the records: the backend, this
    node's networks and the backend's links. Equal contexts make equal decisions, so a
    peer view stays valid as long as the context compares equal."""

    backend: Backend
    local: tuple[LocalNetwork, ...]
    links: Hashable = None
