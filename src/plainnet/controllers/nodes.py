"""Every Node a controller needs, kept from one list and a watch, and the controller's
loop around it: reconcile, then wait for a change that matters (or the period), again.

Level-triggered: a pass always plans from all nodes, so a missed or repeated event
costs nothing. Only a change of a node's *facts* (what the controller extracts from
it) wakes the loop: kubelets rewrite their Node's status every few seconds, and a
controller that re-planned — and asked its cloud — on each of those would spend its
API budget on heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node

from plainnet.controllers import API_ERRORS
from plainnet.controllers.lease import LeaderLease
from plainnet.retry import Backoff

log = logging.getLogger("plainnet.controllers.nodes")

F = TypeVar("F")


class NodeCache(Generic[F]):
    def __init__(self, client: AsyncClient, facts_of: Callable[[Any], F]) -> None:
        self.client = client
        self.facts_of = facts_of
        self.nodes: dict[str, F] = {}
        #: set when a node's facts changed (or a pass asks for another one)
        self.changed = asyncio.Event()

    async def follow(
        self, reconcile: Callable[[], Awaitable[None]], period: float | None = None
    ) -> None:
        """List, watch, and run ``reconcile`` after the list, on each change of facts
        and at least every ``period`` seconds; relist (with backoff) whenever the watch
        ends or fails. Runs until cancelled."""
        backoff = Backoff(first=0.5, limit=10.0)
        while True:
            try:
                revision = await self._list()
            except API_ERRORS as exc:
                log.warning("listing nodes failed: %s; retrying in %.1fs", exc, backoff.upcoming)
                await backoff.sleep()
                continue
            watcher = asyncio.create_task(self._watch(revision))
            try:
                while not watcher.done():
                    self.changed.clear()
                    await reconcile()
                    waiter = asyncio.create_task(self.changed.wait())
                    await asyncio.wait(
                        [waiter, watcher], timeout=period, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, *API_ERRORS):
                    await watcher
            if watcher.cancelled() or not watcher.result():
                log.info("node watch failed; relisting in %.1fs", backoff.upcoming)
                await backoff.sleep()
            else:
                backoff.reset()
                log.info("node watch ended; relisting")

    async def _list(self) -> int:
        listing = self.client.list(Node)
        nodes = {}
        async for node in listing:
            nodes[node.metadata.name] = self.facts_of(node)
        self.nodes = nodes
        return int(listing.resourceVersion)

    async def _watch(self, revision: int) -> bool:
        """Follow Node changes; True if the watch ended normally, False if it failed
        (410 Gone, a network error): either way the caller relists."""
        try:
            async for kind, node in self.client.watch(Node, resource_version=str(revision)):
                name = node.metadata.name
                if kind == "DELETED":
                    if self.nodes.pop(name, None) is not None:
                        self.changed.set()
                    continue
                facts = self.facts_of(node)
                if self.nodes.get(name) != facts:
                    self.nodes[name] = facts
                    self.changed.set()
        except API_ERRORS as exc:
            log.warning("node watch failed: %s", exc)
            return False
        return True


async def while_leading(lease: LeaderLease, work: Callable[[], Awaitable[None]]) -> None:
    """Lead, run ``work`` while leading, and start over when the lease is lost."""
    while True:
        await lease.acquire()
        working = asyncio.create_task(work())
        keeping = asyncio.create_task(lease.keep())
        done, _ = await asyncio.wait([working, keeping], return_when=asyncio.FIRST_COMPLETED)
        for task in (working, keeping):
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]  # a bug: say so
