"""One way to wait before trying again, shared by every loop that talks to something
that can fail: the agent's start-up, watch, relist, lease renewal and kernel retries,
and the allocator's list, watch and leader lease.

Exponential with a cap and jitter: a hundred agents that lost their datastore at the
same moment must not come back at the same moment either.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """``delay()`` grows ``first``, ``2·first``, ``4·first`` … up to ``limit`` (each with
    up to ``jitter`` of it added at random); ``reset()`` after a success."""

    first: float = 1.0
    limit: float = 5.0
    jitter: float = 0.1
    _next: float = field(default=0.0, init=False)

    def delay(self) -> float:
        base = self._next or self.first
        self._next = min(base * 2, self.limit)
        return min(base, self.limit) * (1 + random.uniform(0, self.jitter))

    def reset(self) -> None:
        self._next = 0.0

    async def sleep(self) -> float:
        """Wait the next delay; returns it (for the log line that announces the retry)."""
        seconds = self.delay()
        await asyncio.sleep(seconds)
        return seconds

    @property
    def upcoming(self) -> float:
        """The delay the next ``sleep()`` will wait, without jitter (for log lines)."""
        return min(self._next or self.first, self.limit)

    async def retry(
        self,
        attempt: Callable[[], Awaitable[T]],
        errors: type[BaseException] | tuple[type[BaseException], ...],
        failed: Callable[[BaseException, float], None],
        until: type[BaseException] | tuple[type[BaseException], ...] = (),
    ) -> T:
        """``await attempt()`` until it succeeds; each failure of ``errors`` is handed to
        ``failed`` (with the delay before the next try: for its log line and metric),
        then waited for. Anything else — and ``until``, a kind of ``errors`` that no
        retry mends — is raised."""
        while True:
            try:
                result = await attempt()
            except errors as exc:
                if until and isinstance(exc, until):
                    raise
                failed(exc, self.upcoming)
                await self.sleep()
                continue
            self.reset()
            return result


async def supervise(
    loop: Callable[[], Awaitable[None]],
    backoff: Backoff,
    failed: Callable[[float], None],
) -> None:
    """Run ``loop`` for ever: a failure (a bug) is handed to ``failed`` — called inside
    the ``except``, so it can log the traceback — with the delay before the restart."""
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            failed(backoff.upcoming)
            await backoff.sleep()
