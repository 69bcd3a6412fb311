"""Peer records and the datastore interface the agent depends on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from plainnet.errors import PlainnetError
from plainnet.ipam.types import IPAddress, IPNetwork


@dataclass(frozen=True)
class PeerRecord:
    """What one node publishes: its pod subnet(s), its address(es), its backend.

    ``claimed_at`` orders claims (the etcd create revision; a Node's creation order):
    when two records overlap, the earlier claim wins.
    """

    key: str
    node: str
    subnets: tuple[IPNetwork, ...]
    addresses: tuple[IPAddress, ...]
    backend: str
    backend_data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    claimed_at: int = 0
    #: Flannel's ``BackendV6Data``: backend data of a node whose VXLAN underlay is IPv6.
    backend_data_v6: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def address_for(self, version: int) -> IPAddress | None:
        for address in self.addresses:
            if address.version == version:
                return address
        return None

    def subnet_for(self, version: int) -> IPNetwork | None:
        for subnet in self.subnets:
            if subnet.version == version:
                return subnet
        return None


@dataclass(frozen=True)
class InvalidRecord:
    """A record that exists in the datastore but cannot be parsed."""

    key: str
    reason: str
    claimed_at: int = 0


Record = PeerRecord | InvalidRecord


@dataclass(frozen=True)
class Snapshot:
    """Every record at one datastore revision; watching resumes after ``revision``."""

    records: dict[str, Record]
    revision: int


@dataclass(frozen=True)
class Change:
    """One record put (``record`` set) or removed (``record`` None) at ``revision``; with
    ``key`` None, only progress: the datastore is at ``revision`` (a watch bookmark)."""

    key: str | None
    record: Record | None
    revision: int


@dataclass(frozen=True)
class NodeClaim:
    """What this node asks for: its name, addresses and backend; the datastore finds the
    subnet(s)."""

    node: str
    addresses: tuple[IPAddress, ...]
    backend: str
    backend_data: dict[str, Any] = field(default_factory=dict)
    previous_subnets: tuple[IPNetwork, ...] = ()


class DatastoreError(PlainnetError):
    """The datastore cannot be reached or refused a request."""


class HistoryCompacted(DatastoreError):  # noqa: N818 - a condition, not a failure of ours
    """The revision to resume from is gone; the watcher must relist."""


class Datastore(Protocol):
    """list + watch + claim, the whole contract between agent and datastore."""

    async def list(self) -> Snapshot: ...

    def watch(self, after: int) -> AsyncIterator[list[Change]]:
        """Batches of changes after revision ``after``, each batch as the datastore
        delivered it. Raises :class:`HistoryCompacted` when ``after`` is no longer
        available and :class:`DatastoreError` when the connection is lost."""
        ...

    async def claim(self, claim: NodeClaim) -> PeerRecord:
        """This node's record: the one it held before if still its own, else a new one."""
        ...

    async def renew(self) -> None: ...

    async def release(self) -> None: ...

    async def close(self) -> None: ...
