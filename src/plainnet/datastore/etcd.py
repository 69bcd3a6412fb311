"""The etcd v3 datastore, in Flannel's format (:mod:`plainnet.datastore.flannel_format`).

Client library: **aetcd** (asyncio, gRPC; maintained fork of python-etcd3). Compared
with etcd3gw (HTTP to etcd's grpc-gateway, synchronous, long-poll watches): aetcd gives
native gRPC watch streams whose responses carry every event, reports a compacted
start revision as a typed error, and fits the agent's asyncio loop without threads.
python-etcd3 itself is unmaintained since 2020 and breaks on current protobuf.

- ``claim``: a restarted node first looks for its own lease (by plainnet node name, or
  by public address as Flannel does) and re-attaches it to a fresh etcd lease; else it
  takes the next free subnet with a transaction that succeeds only if the key does not
  exist yet — of two nodes racing for one subnet, exactly one wins; the loser takes
  the next. The first subnet of the network is never handed out (Flannel's
  ``SubnetMin`` default), so both allocate from the same range.
- ``watch``: resumes at the revision after the last one seen and hands over every
  event of every response; a compacted revision becomes :class:`HistoryCompacted`
  and the agent relists.
- ``renew``: a keep-alive on the etcd lease; if the lease is gone (etcd was away
  longer than the TTL) the record is put back under a new lease, if still free.
- ``restore``: the record was deleted: put it back under a new lease, or — if another
  node took the subnet meanwhile — claim again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.transactions

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
)
from plainnet.ipam.errors import IpamError
from plainnet.ipam.node_subnets import NodeSubnetAllocator
from plainnet.ipam.types import IPNetwork

log = logging.getLogger("plainnet.datastore.etcd")

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


def etcd_client(endpoint: str, timeout: float = 5.0) -> aetcd.Client:
    """An aetcd client for ``http://HOST:PORT``, with plainnet's channel settings."""
    host, port = parse_endpoint(endpoint)
    return aetcd.Client(host=host, port=port, timeout=int(timeout) or 1, options=GRPC_OPTIONS)


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
        return fmt.parse_lease(key, key[len(self._subnets_prefix) :], kv.value, kv.create_revision)

    # --- network config --------------------------------------------------------------

    async def network_config(self) -> ClusterNetwork:
        return (await self.flannel_config()).cluster_network()

    async def flannel_config(self) -> fmt.FlannelNetworkConfig:
        key = f"{self.prefix}/config"
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
            "write network config", self.client.put(f"{self.prefix}/config".encode(), text.encode())
        )

    # --- list and watch --------------------------------------------------------------

    async def list(self) -> Snapshot:
        result = await self._call(
            "list leases", self.client.get_prefix(self._subnets_prefix.encode())
        )
        records = {}
        for kv in result:
            record = self._record(kv)
            records[record.key] = record
        return Snapshot(records, result.header.revision)

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
            own = self._find_own(snapshot, claim, allocator)
            if own is not None:
                if await self._put(own.key, claim, expect_mod=own.claimed_at, reuse=True):
                    log.info("reclaimed %s for node %s", own.key, claim.node)
                    return self._own_record(own.key, own.subnets, claim)
                continue
            for subnets in self._candidates(snapshot, claim, allocator):
                key = self._subnets_prefix + fmt.subnet_key(subnets)
                if await self._put(key, claim, expect_mod=None):
                    log.info("claimed %s for node %s", key, claim.node)
                    return self._own_record(key, subnets, claim)
                break  # lost a race: look at the new state of things
        raise DatastoreError(
            f"etcd {self.endpoint}: could not claim a subnet for node "
            f"{claim.node} after {CLAIM_ATTEMPTS} attempts"
        )

    def _find_own(
        self, snapshot: Snapshot, claim: NodeClaim, allocator: NodeSubnetAllocator
    ) -> PeerRecord | None:
        families = {pool.version for pool in allocator.pools}
        for record in snapshot.records.values():
            if not isinstance(record, PeerRecord):
                continue
            mine = record.node == claim.node or (
                bool(set(record.addresses) & set(claim.addresses))
                and record.node in {str(a) for a in record.addresses}  # a Flannel-style lease
            )
            if (
                mine
                and {s.version for s in record.subnets} == families
                and all(
                    s.subnet_of(allocator.pool_for(s).cluster)
                    for s in record.subnets  # type: ignore[arg-type]
                )
            ):
                return record
        return None

    def _candidates(
        self, snapshot: Snapshot, claim: NodeClaim, allocator: NodeSubnetAllocator
    ) -> Any:
        """Subnet tuples worth trying, best first: the previous subnets, then next free."""
        for pool in allocator.pools:
            first = pool.subnet_at(0)
            pool.occupy(first)  # Flannel never hands out the first subnet either
        for record in snapshot.records.values():
            if isinstance(record, PeerRecord):
                for subnet in record.subnets:
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
        while True:
            try:
                yield allocator.allocate()
            except IpamError as exc:
                raise DatastoreError(f"no subnet for node {claim.node}: {exc}") from None

    async def _put(
        self, key: str, claim: NodeClaim, *, expect_mod: int | None, reuse: bool = False
    ) -> bool:
        lease = await self._call("grant lease", self.client.lease(self.ttl_seconds))
        value = fmt.lease_value(
            claim.node, claim.addresses, claim.backend, claim.backend_data, claim.backend_data_v6
        )
        compare = (
            [self.client.transactions.version(key.encode()) == 0]
            if not reuse
            else [self.client.transactions.create(key.encode()) == expect_mod]
        )
        put = aetcd.transactions.Put(key.encode(), value.encode(), lease=lease.id)
        succeeded, _ = await self._call(
            "claim subnet", self.client.transaction(compare=compare, success=[put], failure=[])
        )
        if not succeeded:
            await self._call("revoke lease", self.client.revoke_lease(lease.id))
            return False
        if self._lease_id is not None and self._lease_id != lease.id:
            with contextlib.suppress(CLIENT_ERRORS):
                await self.client.revoke_lease(self._lease_id)
        self._lease_id = lease.id
        return True

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

    async def renew(self) -> None:
        if self._own is None or self._claim is None or self._lease_id is None:
            raise DatastoreError("renew before claim")
        reply = await self._call("renew lease", self.client.refresh_lease(self._lease_id))
        alive = reply is not None and reply.TTL > 0
        if alive and await self._call("read own record", self.client.get(self._own.key.encode())):
            return
        log.warning(
            "record %s is gone (lease %s); putting it back",
            self._own.key,
            "alive" if alive else "expired",
        )
        if not await self._put(self._own.key, self._claim, expect_mod=None):
            raise DatastoreError(
                f"subnet {self._own.key} was taken by another node while "
                f"this node's lease had expired"
            )

    async def restore(self) -> PeerRecord:
        if self._own is None or self._claim is None:
            raise DatastoreError("restore before claim")
        if await self._call("read own record", self.client.get(self._own.key.encode())):
            return self._own
        if await self._put(self._own.key, self._claim, expect_mod=None):
            log.warning("put this node's record %s back", self._own.key)
            return self._own
        log.error(
            "subnet %s was taken by another node while this node's record was gone; claiming again",
            self._own.key,
        )
        return await self.claim(self._claim)
