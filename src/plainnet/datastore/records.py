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
    #: The etcd lease the record is attached to (0: none, or not an etcd record).
    lease: int = field(default=0, compare=False)

    def same_claim(self, other: PeerRecord) -> bool:
        """Whether ``other`` says what this record says (what a node compares its own
        record with: a rewrite that changes any of it is not the node's)."""
        return (
            self.node == other.node
            and self.subnets == other.subnets
            and self.addresses == other.addresses
            and self.backend == other.backend
            and self.backend_data == other.backend_data
            and self.backend_data_v6 == other.backend_data_v6
        )

    def address_for(self, version: int) -> IPAddress | None:
        for address in self.addresses:
            if address.version == version:
                return address
        return None


@dataclass(frozen=True)
class InvalidRecord:
    """A record that exists in the datastore but cannot be parsed. ``label`` is the
    refusal's metric label (``unparseable``, or a more precise one)."""

    key: str
    reason: str
    claimed_at: int = 0
    label: str = "unparseable"


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
    """What this node asks for: its name, addresses and backend (record type and data,
    as the backend decides); the datastore finds the subnet(s)."""

    node: str
    addresses: tuple[IPAddress, ...]
    backend: str
    backend_data: dict[str, Any] = field(default_factory=dict)
    previous_subnets: tuple[IPNetwork, ...] = ()
    backend_data_v6: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterNetwork:
    """What every node of a cluster agrees on: the pod address space, how it splits into
    node subnets, and the backend with its settings (names as the backend reads them,
    e.g. ``{"vni": 1, "port": 8472}`` for vxlan)."""

    cluster_cidrs: tuple[IPNetwork, ...]
    backend: str
    backend_options: dict[str, Any] = field(default_factory=dict)
    node_prefixes: dict[int, int] = field(default_factory=dict)


class DatastoreError(PlainnetError):
    """The datastore cannot be reached or refused a request."""


class SubnetLost(DatastoreError):  # noqa: N818 - a condition, not a failure of ours
    """This node's lease expired (the node was paused or cut off) and another node holds
    its subnet now: the node must claim again."""


class HistoryCompacted(DatastoreError):  # noqa: N818 - a condition, not a failure of ours
    """The revision to resume from is gone; the watcher must relist."""


class Datastore(Protocol):
    """network config + list + watch + claim, the whole contract between agent and
    datastore."""

    async def network_config(self) -> ClusterNetwork: ...

    async def list(self) -> Snapshot: ...

    def watch(self, after: int) -> AsyncIterator[list[Change]]:
        """Batches of changes after revision ``after``, each batch as the datastore
        delivered it. Raises :class:`HistoryCompacted` when ``after`` is no longer
        available and :class:`DatastoreError` when the connection is lost."""
        ...

    async def node_addresses(self) -> tuple[IPAddress, ...]:
        """The addresses the datastore already knows this node by (a Node's InternalIPs;
        none for etcd): start-up prefers them over guessing from the interfaces."""
        ...

    async def claim(self, claim: NodeClaim) -> PeerRecord:
        """This node's record: the one it held before if still its own, else a new one."""
        ...

    async def renew(self) -> None:
        """Keep this node's record alive (etcd: its lease); DatastoreError on failure."""
        ...

    async def restore(self) -> PeerRecord:
        """This node's record was deleted (or expired): put it back, or — where the agent
        cannot write it (a Node object) — wait until it is back. The subnet may differ
        if another node took it meanwhile."""
        ...

    def claim_snapshot(self) -> Snapshot | None:
        """The records as the claim read them (with this node's own as it wrote it), once;
        None where there is none. At 65,536 nodes a list takes most of a second: the
        agent's first list is then this one, and its watch replays what came after."""
        ...

    def own_record_intact(self, record: Record) -> bool:
        """Whether ``record``, read at this node's own key, is what this node wrote (etcd:
        the same content, attached to this node's lease). A Node object is written by
        Kubernetes, not by the agent, and is always taken as it is."""
        ...

    async def ping(self) -> None:
        """Answer one cheap read that needs a working datastore (etcd: a linearizable
        read, so a stopped or leaderless etcd does not answer); DatastoreError if not.
        The caller bounds it with a timeout: a frozen server keeps its TCP connections
        open and never fails a request by itself."""
        ...

    async def close(self) -> None: ...
