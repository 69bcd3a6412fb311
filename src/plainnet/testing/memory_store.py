"""A pod address store in memory, for tests of the allocator's policy (the product
keeps addresses in :class:`~plainnet.ipam.file_store.FilePodAddressStore`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from plainnet.ipam.pod_addresses import PodAddressState


class MemoryPodAddressStore:
    def __init__(self) -> None:
        self.state = PodAddressState()

    @contextmanager
    def transaction(self) -> Iterator[PodAddressState]:
        working = PodAddressState(dict(self.state.reservations), self.state.last_reserved)
        yield working
        self.state = working
