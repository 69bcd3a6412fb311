"""Pod address reservations on disk: crash-safe and shared between processes.

One directory per node subnet holds two files:

- ``lock``: held with ``flock(LOCK_EX)`` for the length of a commit. The kernel
  drops the lock when its holder dies, even by ``kill -9``, so a crashed CNI call never
  blocks the next one. (A separate file, because the state file is replaced on every
  commit and a lock on a replaced inode would protect nothing.)
- ``reservations.json``: the whole state — every reservation with its owner and the
  last address handed out. A commit writes a temporary file, fsyncs it and renames it
  over the old one. ``rename(2)`` is atomic, so a reader sees either the old or the new
  state and never a half-written record, whenever the writer is killed.

Changes are group-committed: within one process, the changes that arrive while a
commit is being written wait and then go into the next one together — one lock, one
read, one fsynced write for all of them (:class:`_GroupCommit`). Each still returns only
once it is on disk.

One file rather than host-local's file per address: a node holds a few hundred pods at
most, so reading and rewriting ~20 KB is cheaper than host-local's directory scan plus
one file read per address to find a container's reservation, and a multi-address
change (GC, a dual-interface pod) commits atomically as one rename.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any, TypeVar

from plainnet.ipam.errors import IpamError
from plainnet.ipam.pod_addresses import LEGACY_NETWORK, Owner, PodAddressState
from plainnet.ipam.types import IPNetwork

STATE_FILE = "reservations.json"
LOCK_FILE = "lock"
FORMAT_VERSION = 1

T = TypeVar("T")


class StoreCorruptError(IpamError):
    """The state file exists but cannot be read as plainnet reservations."""


def store_directory(state_dir: Path, subnet: IPNetwork) -> Path:
    """Where the reservations of ``subnet`` live under ``state_dir``."""
    return state_dir / str(subnet).replace("/", "_")


@dataclass
class _Change:
    apply: Callable[[PodAddressState], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class _GroupCommit:
    """The changes waiting for one directory in this process. The first caller to find
    no commit running becomes the leader: it takes the file lock, applies every change
    queued by then (each in turn, a failed one rolled back alone), writes and fsyncs
    the result once, and wakes the others. 50 concurrent ADDs were 50 fsynced commits
    in a row on one lock; now they are a few."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.queue: list[_Change] = []
        self.running = False


_group_commits: dict[Path, _GroupCommit] = {}
_group_commits_lock = threading.Lock()


def _group_commit(directory: Path) -> _GroupCommit:
    with _group_commits_lock:
        return _group_commits.setdefault(directory, _GroupCommit())


class FilePodAddressStore:
    """A :class:`~plainnet.ipam.pod_addresses.PodAddressStore` in a directory."""

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        """``durable=False`` skips fsync: still safe against a killed process (the page
        cache survives it), not against power loss. For tmpfs state and benchmarks."""
        self.directory = Path(directory)
        self.durable = durable
        self._state_path = self.directory / STATE_FILE
        self._tmp_path = self.directory / (STATE_FILE + ".tmp")
        self._group = _group_commit(self.directory.absolute())

    def run(self, change: Callable[[PodAddressState], T]) -> T:
        item = _Change(change)
        group = self._group
        with group.condition:
            group.queue.append(item)
            while not item.done:
                if group.running:
                    group.condition.wait()
                    continue
                group.running = True
                batch, group.queue = group.queue, []
                group.condition.release()
                try:
                    self._commit(batch)
                finally:
                    group.condition.acquire()
                    group.running = False
                    group.condition.notify_all()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[no-any-return]

    def snapshot(self) -> PodAddressState:
        """The reservations as on disk now, read without the lock: a commit replaces the
        file by rename, so a reader sees a whole state (for ``plainnet doctor``).
        :class:`StoreCorruptError` if it is unreadable."""
        return self._parse(self._read_text())

    def _commit(self, batch: list[_Change]) -> None:
        """Under the file lock (other processes, and a holder killed by -9, which the
        kernel releases): read, apply each change, write once."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(
                self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                state = self._parse(self._read_text())
                before = _serialise(state)
                for item in batch:
                    kept = PodAddressState(dict(state.reservations), state.last_reserved)
                    try:
                        item.result = item.apply(state)
                    except Exception as exc:  # this change only: roll it back
                        item.error = exc
                        state = kept
                after = _serialise(state)
                if after != before:
                    self._write_atomically(after)
            finally:
                os.close(lock_fd)  # releases the flock
        except BaseException as exc:  # nothing was committed: every change of the batch fails
            for item in batch:
                item.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:  # also when the leader is interrupted: nobody waits for it forever
            for item in batch:
                item.done = True

    def _read_text(self) -> str | None:
        try:
            return self._state_path.read_text()
        except FileNotFoundError:
            return None

    def _parse(self, text: str | None) -> PodAddressState:
        if text is None:
            return PodAddressState()
        try:
            document = json.loads(text)
            if document.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {document.get('version')!r}")
            last = document.get("last_reserved")
            return PodAddressState(
                reservations={
                    ip_address(address): Owner(
                        record["container_id"],
                        record["ifname"],
                        record.get("network", LEGACY_NETWORK),
                    )
                    for address, record in document["reservations"].items()
                },
                last_reserved=ip_address(last) if last else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorruptError(
                f"pod address state {self._state_path} is unreadable ({exc}); move it aside "
                f"and let CNI GC rebuild the reservations"
            ) from exc

    def _write_atomically(self, text: str) -> None:
        # The lock makes this process the only writer, so one fixed temporary name is
        # safe; one left behind by a killed writer is simply overwritten.
        fd = os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp_path, self._state_path)
        if self.durable:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _serialise(state: PodAddressState) -> str:
    document = {
        "version": FORMAT_VERSION,
        "last_reserved": str(state.last_reserved) if state.last_reserved else None,
        "reservations": {
            str(address): {
                "container_id": owner.container_id,
                "ifname": owner.ifname,
                "network": owner.network,
            }
            for address, owner in sorted(state.reservations.items())
        },
    }
    return json.dumps(document, indent=1) + "\n"
