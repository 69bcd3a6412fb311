"""A pod address store in memory, for tests of the allocator's policy (the product
keeps addresses in :class:`~plainnet.ipam.file_store.FilePodAddressStore`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from plainnet.ipam.pod_addresses import PodAddressState

T = TypeVar("T")


class MemoryPodAddressStore:
    def __init__(self) -> None:
        self.state = PodAddressState()

    def run(self, change: Callable[[PodAddressState], T]) -> T:
        working = PodAddressState(dict(self.state.reservations), self.state.last_reserved)
        result = change(working)
        self.state = working
        return result
