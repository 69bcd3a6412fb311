"""A datastore and a kernel that live in memory, for the agent loop's unit tests: no
root, no server, every failure on demand."""

from __future__ import annotations

import asyncio
import errno
import socket
from ipaddress import ip_address, ip_network

from plainnet.agent.kernel_model import KernelRefusal
from plainnet.agent.local_networks import LocalNetwork
from plainnet.agent.plan import KernelState, Plan, apply_plan_to_state
from plainnet.datastore.records import (
    Change,
    ClusterNetwork,
    DatastoreError,
    NodeClaim,
    PeerRecord,
    Snapshot,
)

CLUSTER = (ip_network("10.244.0.0/16"),)
UPLINK = LocalNetwork(ip_network("10.250.0.0/24"), 2, "eth0", ip_address("10.250.0.1"))


def peer(number: int) -> PeerRecord:
    return PeerRecord(
        f"k{number}",
        f"node{number}",
        (ip_network(f"10.244.{number}.0/24"),),
        (ip_address(f"10.250.0.{number}"),),
        "host-gw",
        claimed_at=number,
    )


class FakeDatastore:
    """Records in a dict; ``events`` feeds the watch (a list of changes, or an exception
    to raise from it); ``fail`` maps an operation to how many more calls fail."""

    def __init__(self, own_number: int = 1) -> None:
        self.own = peer(own_number)
        self.records: dict = {self.own.key: self.own}
        self.revision = 1
        self.events: asyncio.Queue = asyncio.Queue()
        self.fail: dict[str, int] = {}
        self.hang: set[str] = set()
        self.calls: dict[str, int] = {}

    def _enter(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if self.fail.get(operation, 0) > 0:
            self.fail[operation] -= 1
            raise DatastoreError(f"fake {operation} failed")

    async def _maybe_hang(self, operation: str) -> None:
        while operation in self.hang:
            await asyncio.sleep(0.05)

    def put(self, record, revision_step: int = 1) -> None:
        """Change a record and deliver the change to the watch."""
        self.revision += revision_step
        if isinstance(record, str):
            self.records.pop(record, None)
            self.events.put_nowait([Change(record, None, self.revision)])
        else:
            self.records[record.key] = record
            self.events.put_nowait([Change(record.key, record, self.revision)])

    async def network_config(self) -> ClusterNetwork:
        await self._maybe_hang("network_config")
        self._enter("network_config")
        return ClusterNetwork(CLUSTER, "host-gw", {}, {4: 24})

    async def claim(self, claim: NodeClaim) -> PeerRecord:
        self._enter("claim")
        return self.own

    async def list(self) -> Snapshot:
        self._enter("list")
        return Snapshot(dict(self.records), self.revision)

    async def watch(self, after: int):
        self._enter("watch")
        while True:
            item = await self.events.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def renew(self) -> None:
        self._enter("renew")

    async def restore(self) -> PeerRecord:
        self._enter("restore")
        if not self.own_record_intact(self.records.get(self.own.key)):
            self.put(self.own)
        return self.own

    async def node_addresses(self):
        return ()

    def claim_snapshot(self):
        return None

    def own_record_intact(self, record) -> bool:
        return isinstance(record, PeerRecord) and record.same_claim(self.own)

    async def ping(self) -> None:
        await self._maybe_hang("ping")
        self._enter("ping")

    async def close(self) -> None:
        self.calls["close"] = self.calls.get("close", 0) + 1


class FakeKernel:
    """plainnet's kernel state as values; ``refuse`` names destinations whose route
    the kernel refuses (EINVAL)."""

    def __init__(self) -> None:
        self.state = KernelState()
        self.refuse: set = set()
        self.applies = 0
        self.reads = 0
        self.unparsed_reads = 0
        self._events = socket.socketpair()

    def read_state(self, devices=(), known: KernelState | None = None) -> KernelState:
        """A copy of the state, or ``known`` itself while the state is what it was read
        from (as the real adapter's fingerprint of the route messages tells)."""
        self.reads += 1
        held = [*self.state.routes.items(), *self.state.nexthops.items()]
        fingerprint = repr(sorted(map(repr, held))).encode()
        if known is not None and known.fingerprint == fingerprint:
            self.unparsed_reads += 1
            return known
        copy = KernelState()
        copy.routes = dict(self.state.routes)
        copy.nexthops = dict(self.state.nexthops)
        copy.used_nexthop_ids = set(self.state.used_nexthop_ids)
        copy.fingerprint = fingerprint
        return copy

    def apply(self, plan: Plan) -> list[KernelRefusal]:
        self.applies += 1
        refused = {d for d, _, _ in plan.add_routes + plan.replace_routes if d in self.refuse}
        apply_plan_to_state(plan, self.state, refused, 158)
        return [KernelRefusal("route", d, errno.EINVAL) for d in sorted(refused)]

    def local_networks(self, own_devices=()) -> list[LocalNetwork]:
        return [UPLINK]

    def link_index(self, name: str) -> int | None:
        return None

    def event_socket(self) -> socket.socket:
        self._events[0].setblocking(False)
        return self._events[0]

    def interface_mtu(self, ifindex: int) -> int:
        return 1500

    def enable_forwarding(self, versions=(4, 6)) -> list[str]:
        return []

    def close(self) -> None:
        for end in self._events:
            end.close()

    @property
    def destinations(self) -> set[str]:
        return {str(d) for d in self.state.routes}
