"""Pod address reservations on disk: crash-safe and shared between processes.

One directory per node subnet holds two files:

- ``lock``: held with ``flock(LOCK_EX)`` for the length of a transaction. The kernel
  drops the lock when its holder dies, even by ``kill -9``, so a crashed CNI call never
  blocks the next one. (A separate file, because the state file is replaced on every
  commit and a lock on a replaced inode would protect nothing.)
- ``reservations.json``: the whole state — every reservation with its owner and the
  last address handed out. A commit writes a temporary file, fsyncs it and renames it
  over the old one. ``rename(2)`` is atomic, so a reader sees either the old or the new
  state and never a half-written record, whenever the writer is killed.

One file rather than host-local's file per address: a node holds a few hundred pods at
most, so reading and rewriting ~20 KB is cheaper than host-local's directory scan plus
one file read per address to find a container's reservation, and a multi-address
change (GC, a dual-interface pod) commits atomically as one rename.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path

from plainnet.ipam.errors import IpamError
from plainnet.ipam.pod_addresses import LEGACY_NETWORK, Owner, PodAddressState
from plainnet.ipam.types import IPNetwork

STATE_FILE = "reservations.json"
LOCK_FILE = "lock"
FORMAT_VERSION = 1


class StoreCorruptError(IpamError):
    """The state file exists but cannot be read as plainnet reservations."""


def store_directory(state_dir: Path, subnet: IPNetwork) -> Path:
    """Where the reservations of ``subnet`` live under ``state_dir``."""
    return state_dir / str(subnet).replace("/", "_")


class FilePodAddressStore:
    """A :class:`~plainnet.ipam.pod_addresses.PodAddressStore` in a directory."""

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        """``durable=False`` skips fsync: still safe against a killed process (the page
        cache survives it), not against power loss. For tmpfs state and benchmarks."""
        self.directory = Path(directory)
        self.durable = durable
        self._state_path = self.directory / STATE_FILE
        self._tmp_path = self.directory / (STATE_FILE + ".tmp")

    @contextmanager
    def transaction(self) -> Iterator[PodAddressState]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            state = self._parse(self._read_text())
            before = _serialise(state)
            yield state
            after = _serialise(state)
            if after != before:
                self._write_atomically(after)
        finally:
            os.close(lock_fd)  # releases the flock

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
