"""The etcd v3 datastore, in Flannel's format (:mod:`plainnet.datastore.flannel_format`).

Client library: **aetcd** (asyncio, gRPC; maintained fork of python-etcd3). Compared
with etcd3gw (HTTP to etcd's grpc-gateway, synchronous, long-poll watches): aetcd gives
native gRPC watch streams whose responses carry every event, reports a compacted
start revision as a typed error, and fits the agent's asyncio loop without threads.
python-etcd3 itself is unmaintained since 2020 and breaks on current protobuf.

- ``claim``: a restarted node first looks for its own lease (plainnet node name and
  address, or a Flannel lease of its address; the subnet of its ``subnet.json`` first)
  and re-attaches it to a fresh etcd lease; else it
  takes the next free subnet with a transaction that succeeds only if the key does not
  exist yet — of two nodes racing for one subnet, exactly one wins; the loser takes
  the next. The first subnet of the network is never handed out (Flannel's
  ``SubnetMin`` default), so both allocate from the same range.
- ``watch``: resumes at the revision after the last one seen and hands over every
  event of every response; a compacted revision becomes :class:`HistoryCompacted`
  and the agent relists.
- ``renew``: a keep-alive on the etcd lease, and a look at the record: if it is gone,
  or rewritten (other content, or detached from this node's lease) while the lease is
  alive, it is put back; if the lease had expired, under a new lease if still free.
- ``restore``: the record was deleted or rewritten: put it back the same way, or — if
  another node took the subnet after this node's lease expired — claim again.

Anyone who can write the prefix can rewrite a node's record; the node undoes it as soon
as its watch shows it, but until then other nodes follow the rewrite. Only a datastore
that lets each node write its own record alone closes that window: the Kubernetes
datastore (Nodes are written by the kubelet and the allocator), or an etcd with client
certificates and per-key roles (not built yet: plainnet talks plain HTTP to etcd).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.transactions
import aetcd.utils

from plainnet.datastore import flannel_format as fmt
from plainnet.datastore.records import (
    Change,
    ClusterNetwork,
    DatastoreError,
    HistoryCompacted,
    InvalidRecord,
    NodeClaim,
    PeerRecord,
    Record,
    Snapshot,
    SubnetLost,
)
from plainnet.ipam.errors import IpamError
from plainnet.ipam.node_subnets import NodeSubnetAllocator
from plainnet.ipam.types import IPAddress, IPNetwork

log = logging.getLogger("plainnet.datastore.etcd")

#: The largest message the client accepts (gRPC's default is 4 MiB). A list is read in
#: pages, so this only has to hold one page; a page of values near etcd's request limit
#: (1.5 MiB each by default) that still does not fit is read again with fewer keys.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024

#: Keys per page of a list. 65,536 honest leases (~140 bytes each) are 66 pages of
#: ~140 kB; the page shrinks down to one key for records near etcd's size limit.
LIST_PAGE_KEYS = 1000

#: gRPC channel settings. Reconnect quickly once etcd is back (gRPC's default backoff
#: grows to two minutes), and ping an idle connection so a watch on an etcd that
#: vanished without closing it fails instead of hanging (etcd accepts pings every 5 s).
GRPC_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,  # default 2: an idle watch stops pinging
    "grpc.max_receive_message_length": MAX_RECEIVE_BYTES,
}

#: How often a node may lose a race for a free subnet before it gives up.
CLAIM_ATTEMPTS = 64


CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ClientError,
    ConnectionError,
    OSError,
)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of ``http://HOST:PORT`` (or ``HOST:PORT``); one clear line for
    anything else."""
    expected = f"etcd endpoint {endpoint!r}: expected http://HOST:PORT"
    try:
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        port = url.port or 2379
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise DatastoreError(f"{expected} ({exc})") from None
    if url.scheme != "http":
        raise DatastoreError(f"{expected} (scheme {url.scheme!r} is not supported)")
    if not url.hostname or url.path not in ("", "/") or url.query:
        raise DatastoreError(expected)
    return url.hostname, port


class PagedClient(aetcd.Client):
    """aetcd's client plus the one request it lacks: a range read with a key limit at a
    fixed revision (aetcd's ``get_prefix`` returns everything in one message, which
    at scale, or with a few huge values, exceeds any receive limit)."""

    @aetcd.client._ensure_connected
    async def range_page(self, start: bytes, end: bytes, limit: int, revision: int) -> Any:
        """The raw ``RangeResponse`` (``kvs``, ``more``, ``header.revision``);
        ``revision`` 0 reads the newest."""
        request = self._build_get_range_request(key=start, range_end=end)
        request.limit = limit
        request.revision = revision
        return await self.kvstub.Range(request, timeout=self._timeout, metadata=self.metadata)


def etcd_client(endpoint: str, timeout: float = 5.0) -> PagedClient:
    """An aetcd client for ``http://HOST:PORT``, with plainnet's channel settings."""
    host, port = parse_endpoint(endpoint)
    return PagedClient(host=host, port=port, timeout=int(timeout) or 1, options=GRPC_OPTIONS)


class _PageTooLargeError(Exception):
    """A list page exceeded :data:`MAX_RECEIVE_BYTES`."""


def decode_key(raw: bytes) -> str:
    """A key as text; bytes that are not UTF-8 are escaped (the record is then refused,
    never a reason to stop reading)."""
    return raw.decode("utf-8", "backslashreplace")


class EtcdDatastore:
    def __init__(
        self,
        endpoint: str,
        prefix: str = fmt.DEFAULT_PREFIX,
        ttl_seconds: int = fmt.DEFAULT_TTL_SECONDS,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.prefix = prefix.rstrip("/")
        self.ttl_seconds = ttl_seconds
        self.client = etcd_client(endpoint, timeout)
        self._subnets_prefix = f"{self.prefix}/subnets/"
        self._own: PeerRecord | None = None
        self._claim: NodeClaim | None = None
        self._lease_id: int | None = None
        self._config_key = f"{self.prefix}/config"
        # plainnet's own keys beside Flannel's subnets/ (Flannel never reads them)
        self._plainnet_prefix = f"{self.prefix}/plainnet/"
        self._holds_prefix = f"{self._plainnet_prefix}held/"
        self._cursor_key = f"{self._plainnet_prefix}next-fit"
        self._hold_key: str | None = None
        self._hold_lease_id: int | None = None
        self._claim_snapshot: Snapshot | None = None
        #: raw key -> (mod revision, record) of the last list (see :meth:`list`)
        self._parsed: dict[bytes, tuple[int, Record]] = {}

    # --- plumbing --------------------------------------------------------------------

    async def _call(self, what: str, coroutine: Any) -> Any:
        try:
            return await coroutine
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise HistoryCompacted(str(exc)) from None
        except CLIENT_ERRORS as exc:
            raise DatastoreError(f"etcd {self.endpoint}: {what} failed: {exc}") from None

    async def close(self) -> None:
        with contextlib.suppress(CLIENT_ERRORS):
            await self.client.close()

    def _record(self, kv: Any) -> Record:
        key = decode_key(kv.key)
        if key.encode() != kv.key:
            return InvalidRecord(key, "the key is not valid UTF-8", kv.create_revision)
        name = key[len(self._subnets_prefix) :]
        return fmt.parse_lease(key, name, kv.value, kv.create_revision, kv.lease)

    # --- network config --------------------------------------------------------------

    async def network_config(self) -> ClusterNetwork:
        return (await self.flannel_config()).cluster_network()

    async def flannel_config(self) -> fmt.FlannelNetworkConfig:
        key = self._config_key
        result = await self._call("read network config", self.client.get(key.encode()))
        if result is None:
            raise DatastoreError(
                f"etcd {self.endpoint}: no network config at {key}; write one with "
                f"`plainnet etcd init --cluster-cidr ...`"
            )
        try:
            return fmt.parse_config(result.value.decode())
        except (ValueError, KeyError, TypeError) as exc:
            raise DatastoreError(f"etcd {self.endpoint}: network config at {key}: {exc}") from None

    async def put_network_config(self, text: str) -> None:
        await self._call(
            "write network config", self.client.put(self._config_key.encode(), text.encode())
        )

    async def node_addresses(self) -> tuple[IPAddress, ...]:
        return ()

    async def ping(self) -> None:
        await self._call("read network config", self.client.get(self._config_key.encode()))

    # --- list and watch --------------------------------------------------------------

    async def list(self) -> Snapshot:
        """Every lease. A record unchanged since the last list (same key, same mod
        revision) is not parsed again: a claim lists, and the agent relists right after;
        at 65,536 nodes parsing is most of a list's cost."""
        kvs, revision = await self._read_prefix(self._subnets_prefix, "list leases")
        records: dict[str, Record] = {}
        parsed: dict[bytes, tuple[int, Record]] = {}
        known = self._parsed
        for kv in kvs:
            cached = known.get(kv.key)
            if cached is not None and cached[0] == kv.mod_revision:
                record = cached[1]
            else:
                record = self._record(kv)
            parsed[kv.key] = (kv.mod_revision, record)
            records[record.key] = record
        self._parsed = parsed
        return Snapshot(records, revision)

    async def _read_prefix(self, prefix: str, what: str, revision: int = 0) -> tuple[list, int]:
        """Every key under ``prefix`` at one revision (the newest by default), read in
        pages of :data:`LIST_PAGE_KEYS` keys; a page too large for the client is read
        again with half the keys."""
        start = prefix.encode()
        end = aetcd.utils.prefix_range_end(start)
        kvs: list = []
        limit = LIST_PAGE_KEYS
        while True:
            try:
                page = await self._call(what, self._page(start, end, limit, revision))
            except _PageTooLargeError:
                if limit == 1:
                    raise DatastoreError(
                        f"etcd {self.endpoint}: {what} failed: one record at or after "
                        f"{decode_key(start)!r} is larger than {MAX_RECEIVE_BYTES} bytes"
                    ) from None
                limit = max(1, limit // 2)
                continue
            revision = revision or page.header.revision
            kvs.extend(page.kvs)
            if not page.more or not page.kvs:
                return kvs, revision
            start = page.kvs[-1].key + b"\0"

    async def _page(self, start: bytes, end: bytes, limit: int, revision: int) -> Any:
        try:
            return await self.client.range_page(start, end, limit, revision)
        except aetcd.rpc.AioRpcError as exc:
            if exc.code() == aetcd.rpc.StatusCode.RESOURCE_EXHAUSTED:
                raise _PageTooLargeError from None
            if exc.code() == aetcd.rpc.StatusCode.OUT_OF_RANGE:  # the revision was compacted
                raise HistoryCompacted(exc.details() or "compacted") from None
            aetcd.exceptions._handle_exception(exc)

    async def watch(self, after: int) -> AsyncIterator[list[Change]]:
        """Batches of changes: everything the stream has delivered when the agent asks,
        so a burst arriving together is handed over together."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        watch = await self._call(
            "watch leases",
            self.client.watch_prefix(self._subnets_prefix.encode(), start_revision=after + 1),
        )

        async def pump() -> None:
            try:
                async for event in watch:
                    queue.put_nowait(event)
                queue.put_nowait(DatastoreError(f"etcd {self.endpoint}: watch ended"))
            except BaseException as exc:
                queue.put_nowait(exc)

        pumping = asyncio.create_task(pump())
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                changes: list[Change] = []
                for item in batch:
                    if isinstance(item, BaseException):
                        if changes:
                            yield changes
                        if isinstance(item, aetcd.exceptions.RevisionCompactedError):
                            raise HistoryCompacted(str(item))
                        if isinstance(item, DatastoreError):
                            raise item
                        raise DatastoreError(f"etcd {self.endpoint}: watch failed: {item}")
                    key = decode_key(item.kv.key)
                    record = self._record(item.kv) if item.kind == "PUT" else None
                    changes.append(Change(key, record, item.kv.mod_revision))
                if changes:
                    yield changes
        finally:
            pumping.cancel()
            with contextlib.suppress(Exception):
                await watch.cancel()

    # --- this node's record ------------------------------------------------------------

    async def claim(self, claim: NodeClaim) -> PeerRecord:
        config = await self.flannel_config()
        self._claim = claim
        for _ in range(CLAIM_ATTEMPTS):
            allocator = NodeSubnetAllocator(config.cluster_cidrs, config.node_prefixes)
            snapshot = await self.list()
            holds, cursor = await self._read_holds(snapshot.revision)
            own = self._find_own(snapshot, claim, allocator)
            if own is not None:
                if await self._put(own.key, claim, created=own.claimed_at):
                    log.info("reclaimed %s for node %s", own.key, claim.node)
                    return self._claimed(own.key, own.subnets, claim, snapshot)
                continue
            for subnets in self._candidates(snapshot, holds, cursor, claim, allocator):
                key = self._subnets_prefix + fmt.subnet_key(subnets)
                if await self._put(key, claim, advance_cursor=True):
                    log.info("claimed %s for node %s", key, claim.node)
                    return self._claimed(key, subnets, claim, snapshot)
                break  # lost a race: look at the new state of things
        raise DatastoreError(
            f"etcd {self.endpoint}: could not claim a subnet for node "
            f"{claim.node} after {CLAIM_ATTEMPTS} attempts"
        )

    async def _read_holds(self, revision: int) -> tuple[dict[str, str], str | None]:
        """The held subnets (subnet key name -> the node holding it) and the cluster's
        next-fit cursor (the subnet key name handed out last), at ``revision``."""
        kvs, _ = await self._read_prefix(self._plainnet_prefix, "read subnet holds", revision)
        holds: dict[str, str] = {}
        cursor = None
        for kv in kvs:
            key, value = decode_key(kv.key), kv.value.decode("utf-8", "replace")
            if key == self._cursor_key:
                cursor = value
            elif key.startswith(self._holds_prefix):
                holds[key[len(self._holds_prefix) :]] = value
        return holds, cursor

    def _find_own(
        self, snapshot: Snapshot, claim: NodeClaim, allocator: NodeSubnetAllocator
    ) -> PeerRecord | None:
        """This node's record from before a restart, if one is still there: one that
        carries this node's name *and* one of its addresses (a name alone is anyone's to
        write), or a Flannel lease of this node's address (a node moving from Flannel to
        plainnet keeps its subnet). Of several, the one holding the subnet this node
        last had (its ``subnet.json``) wins; while that subnet is free, none is taken —
        the node claims its previous subnet anew rather than adopt another."""
        families = {pool.version for pool in allocator.pools}
        addresses = set(claim.addresses)
        previous = tuple(claim.previous_subnets)
        mine: list[PeerRecord] = []
        for record in snapshot.records.values():
            if not isinstance(record, PeerRecord) or not addresses & set(record.addresses):
                continue
            named = record.node == claim.node or (
                record.node in {str(a) for a in record.addresses}  # a Flannel-style lease
            )
            if (
                named
                and {s.version for s in record.subnets} == families
                and all(
                    s.subnet_of(allocator.pool_for(s).cluster)
                    for s in record.subnets  # type: ignore[arg-type]
                )
            ):
                mine.append(record)
        for record in mine:
            if record.subnets == previous:
                return record
        if previous and not any(
            isinstance(r, PeerRecord) and set(r.subnets) & set(previous)
            for r in snapshot.records.values()
        ):
            return None  # the previous subnet is free: _candidates offers it first
        return min(mine, key=lambda r: r.claimed_at, default=None)

    def _candidates(
        self,
        snapshot: Snapshot,
        holds: dict[str, str],
        cursor: str | None,
        claim: NodeClaim,
        allocator: NodeSubnetAllocator,
    ) -> Any:
        """Subnet tuples worth trying, best first: the previous subnets, then the next
        free ones after the cluster's cursor. A subnet held for another node (its record
        expired less than a TTL ago: see :meth:`_put`) is not free."""
        for pool in allocator.pools:
            first = pool.subnet_at(0)
            pool.occupy(first)  # Flannel never hands out the first subnet either
        taken = [r.subnets for r in snapshot.records.values() if isinstance(r, PeerRecord)]
        for name, holder in holds.items():
            if holder != claim.node:
                with contextlib.suppress(ValueError):
                    taken.append(fmt.parse_subnet_key(name))
        for subnets in taken:
            for subnet in subnets:
                # outside the network or overlapping: the agent reports it
                with contextlib.suppress(IpamError):
                    allocator.pool_for(subnet).occupy(subnet)
        previous = tuple(claim.previous_subnets)
        if previous and {s.version for s in previous} == {p.version for p in allocator.pools}:
            try:
                allocator.occupy(previous)
                yield previous
            except IpamError:
                pass
        if cursor is not None:
            with contextlib.suppress(ValueError, IpamError):
                allocator.resume_after(fmt.parse_subnet_key(cursor))
        while True:
            try:
                yield allocator.allocate()
            except IpamError as exc:
                raise DatastoreError(f"no subnet for node {claim.node}: {exc}") from None

    async def _put(
        self,
        key: str,
        claim: NodeClaim,
        *,
        created: int | None = None,
        modified: int | None = None,
        lease_id: int | None = None,
        advance_cursor: bool = False,
    ) -> bool:
        """Write this node's record at ``key`` if: with ``created`` — it is still the
        record created at that revision (a reclaim); with ``modified`` — it is still the
        one last changed at that revision (a rewrite this node undoes); else — the key
        is free.
        ``lease_id``: this node's live lease; by default a fresh one. The lease is this
        node's from before the write, so the watch never takes the node's own write
        for someone else's.

        In the same transaction: the subnet's *hold* (a key naming this node, on a
        second lease of twice the TTL, renewed with the first), so that once the record
        expires its subnet stays out of the others' reach for one more TTL — a node
        paused past its TTL that resumes finds it still free; and with
        ``advance_cursor``, the cluster's next-fit cursor, so the next claim anywhere
        starts after this subnet and a freed subnet is handed out again only once the
        never-used ones are gone."""
        if lease_id is None:
            lease_id = (await self._call("grant lease", self.client.lease(self.ttl_seconds))).id
        hold_lease = await self._hold_lease()
        value = fmt.lease_value(
            claim.node, claim.addresses, claim.backend, claim.backend_data, claim.backend_data_v6
        )
        transactions = self.client.transactions
        if modified is not None:
            compare = [transactions.mod(key.encode()) == modified]
        elif created is not None:
            compare = [transactions.create(key.encode()) == created]
        else:
            compare = [transactions.version(key.encode()) == 0]
        name = key[len(self._subnets_prefix) :]
        hold_key = self._holds_prefix + name
        success: list[Any] = [
            aetcd.transactions.Put(key.encode(), value.encode(), lease=lease_id),
            aetcd.transactions.Put(hold_key.encode(), claim.node.encode(), lease=hold_lease),
        ]
        if advance_cursor:
            success.append(aetcd.transactions.Put(self._cursor_key.encode(), name.encode()))
        if self._hold_key is not None and self._hold_key != hold_key:
            success.append(aetcd.transactions.Delete(self._hold_key.encode()))
        previous, self._lease_id = self._lease_id, lease_id
        try:
            succeeded, _ = await self._call(
                "claim subnet",
                self.client.transaction(compare=compare, success=success, failure=[]),
            )
        except BaseException:
            self._lease_id = previous
            raise
        if not succeeded:
            self._lease_id = previous
            if lease_id != previous:
                await self._call("revoke lease", self.client.revoke_lease(lease_id))
            return False
        self._hold_key = hold_key
        if previous is not None and previous != lease_id:
            with contextlib.suppress(CLIENT_ERRORS):
                await self.client.revoke_lease(previous)
        return True

    async def _hold_lease(self) -> int:
        """The lease of this node's subnet hold: alive, or granted anew (and the hold
        put back on it)."""
        if self._hold_lease_id is not None:
            reply = await self._call("renew lease", self.client.refresh_lease(self._hold_lease_id))
            if reply is not None and reply.TTL > 0:
                return self._hold_lease_id
        lease = await self._call("grant lease", self.client.lease(2 * self.ttl_seconds))
        self._hold_lease_id = lease.id
        if self._hold_key is not None and self._claim is not None:
            put = self.client.put(
                self._hold_key.encode(), self._claim.node.encode(), lease=lease.id
            )
            await self._call("hold subnet", put)
        return lease.id

    def _own_record(self, key: str, subnets: tuple[IPNetwork, ...], claim: NodeClaim) -> PeerRecord:
        self._own = PeerRecord(
            key=key,
            node=claim.node,
            subnets=subnets,
            addresses=claim.addresses,
            backend=claim.backend,
            backend_data=claim.backend_data,
            backend_data_v6=claim.backend_data_v6,
        )
        return self._own

    def _claimed(
        self, key: str, subnets: tuple[IPNetwork, ...], claim: NodeClaim, snapshot: Snapshot
    ) -> PeerRecord:
        """This node's record, and the list the claim read kept for :meth:`claim_snapshot`
        with the record as now written (the watch from its revision replays the write)."""
        own = self._own_record(key, subnets, claim)
        records = dict(snapshot.records)
        records[key] = replace(own, lease=self._lease_id or 0)
        self._claim_snapshot = Snapshot(records, snapshot.revision)
        return own

    def claim_snapshot(self) -> Snapshot | None:
        snapshot, self._claim_snapshot = self._claim_snapshot, None
        return snapshot

    def own_record_intact(self, record: Record) -> bool:
        return (
            self._own is not None
            and isinstance(record, PeerRecord)
            and record.lease == self._lease_id
            and record.same_claim(self._own)
        )

    async def _lease_alive(self) -> bool:
        if self._lease_id is None:
            return False
        await self._hold_lease()
        reply = await self._call("renew lease", self.client.refresh_lease(self._lease_id))
        return reply is not None and reply.TTL > 0

    async def renew(self) -> None:
        if self._own is None or self._claim is None or self._lease_id is None:
            raise DatastoreError("renew before claim")
        own = await self._ensure_own()
        if own is not self._own:
            raise SubnetLost(
                f"subnet {self._own.key} was taken by another node while "
                f"this node's lease had expired"
            )

    async def restore(self) -> PeerRecord:
        if self._own is None or self._claim is None:
            raise DatastoreError("restore before claim")
        own = await self._ensure_own()
        if own is not None:
            return own
        log.error(
            "subnet %s was taken by another node while this node's lease had expired; "
            "claiming again",
            self._own.key,
        )
        return await self.claim(self._claim)

    async def _ensure_own(self) -> PeerRecord | None:
        """Keep this node's lease alive and its record as it wrote it: put it back if it
        is gone, or rewritten while the node's lease is alive (the subnet is still this
        node's). None: the lease expired and the record is another node's now."""
        assert self._own is not None and self._claim is not None
        key = self._own.key
        for _ in range(CLAIM_ATTEMPTS):  # a writer racing every put-back cannot hold us
            alive = await self._lease_alive()
            current = await self._call("read own record", self.client.get(key.encode()))
            intact = current is not None and self.own_record_intact(self._record(current))
            if intact and alive:
                return self._own
            lease = self._lease_id if alive else None
            if current is None:
                if await self._put(key, self._claim, lease_id=lease):
                    log.warning("put this node's record %s back (it was gone)", key)
                    return self._own
                return None  # another node claimed the free subnet first
            if not alive and not intact:
                return None  # written by another node after this node's lease ran out
            if await self._put(key, self._claim, modified=current.mod_revision, lease_id=lease):
                log.warning("put this node's record %s back over a rewrite", key)
                return self._own
        raise DatastoreError(f"etcd {self.endpoint}: {key} keeps being rewritten")
