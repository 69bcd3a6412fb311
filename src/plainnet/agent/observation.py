"""Watching the datastore: every record, the revision they are at, and which keys
changed since the reconciler last looked.

One loop, :meth:`Observation.run`, that never ends on a datastore failure: it lists
when it has to (at start, after the history it would resume from was compacted), then
watches from the last revision; any failure at any step — list, watch, relist — only
waits (the shared :class:`~plainnet.retry.Backoff`) and tries again, keeping the last
records, so the data plane keeps forwarding while the control plane is away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from plainnet.agent.metrics import AgentMetrics
from plainnet.datastore.records import (
    Datastore,
    DatastoreError,
    HistoryCompacted,
    Record,
    Snapshot,
)
from plainnet.retry import Backoff

log = logging.getLogger("plainnet.agent")


class Observation:
    def __init__(
        self,
        datastore: Datastore,
        metrics: AgentMetrics,
        on_change: Callable[[str], None],
        backoff: Backoff,
    ) -> None:
        self.datastore = datastore
        self.metrics = metrics
        self.records: dict[str, Record] = {}
        self.revision = 0
        self.own_key: str | None = None
        #: Called with the trigger's name ("datastore", "relist") after records changed.
        self._on_change = on_change
        #: Called with "deleted" or "rewritten" when this node's own record is gone
        #: (deleted, absent from a relist) or is not what the node wrote.
        self.on_own_trouble: Callable[[str], None] = lambda what: None
        self._backoff = backoff
        #: Keys changed since :meth:`take_changed`; None: unknown (the next pass is full).
        self._changed: set[str] | None = None
        self._listed = False
        #: True while a watch runs (it may still be stalled: see the agent's probe).
        self.watching = False

    def take_changed(self) -> set[str] | None:
        changed, self._changed = self._changed, set()
        return changed

    async def relist(self, snapshot: Snapshot | None = None) -> None:
        """Take every record anew: from ``snapshot`` (the claim's list), or a list."""
        snapshot = snapshot or await self.datastore.list()
        self.records, self.revision = dict(snapshot.records), snapshot.revision
        self._changed = None
        self._listed = True
        if self.own_key is not None:
            self._look_at_own(self.records.get(self.own_key))
        self._on_change("relist")

    async def run(self) -> None:
        """List if needed, then watch; forever. Only cancellation ends it."""
        while True:
            try:
                if not self._listed:
                    await self.relist()
                self.watching = True
                self.metrics.datastore_up.set(1)
                async for changes in self.datastore.watch(self.revision):
                    self._apply(changes)
                    self._backoff.reset()
            except HistoryCompacted:
                log.warning(
                    "datastore history after revision %d was compacted; relisting", self.revision
                )
                self._listed = False
            except DatastoreError as exc:
                self.watching = False
                self.metrics.datastore_up.set(0)
                self.metrics.datastore_errors.inc()
                delay = self._backoff.upcoming
                log.warning(
                    "%s; keeping the last %d records and routes, retrying in %.1fs",
                    exc,
                    len(self.records),
                    delay,
                )
                await self._backoff.sleep()

    def _look_at_own(self, record: Record | None) -> None:
        """This node's own record as the datastore has it now: gone, or not as written."""
        if record is None:
            self.on_own_trouble("deleted")
        elif not self.datastore.own_record_intact(record):
            self.on_own_trouble("rewritten")

    def _apply(self, changes: list) -> None:
        touched = False
        for change in changes:
            self.revision = max(self.revision, change.revision)
            if change.key is None:  # a bookmark: only the resume point moves
                continue
            touched = True
            if self._changed is not None:
                self._changed.add(change.key)
            if change.record is None:
                self.records.pop(change.key, None)
            else:
                self.records[change.key] = change.record
            if change.key == self.own_key:
                self._look_at_own(change.record)
        if touched:
            self._on_change("datastore")
