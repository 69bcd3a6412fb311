"""The one supervision every long-running loop uses (the agent's loops, the policy
enforcer): a failing loop is started again after a growing delay."""

import asyncio
import contextlib
import sys

from plainnet.retry import Backoff, supervise


def test_a_supervised_loop_that_fails_is_started_again_and_its_traceback_kept():
    calls, seen = [], []

    async def loop() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("a bug")
        raise asyncio.CancelledError  # the agent stopping

    def failed(delay: float) -> None:
        seen.append((delay, sys.exc_info()[0]))  # inside the except: log.exception works

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(supervise(loop, Backoff(first=0.001, limit=0.002, jitter=0), failed))
    assert len(calls) == 3
    assert seen == [(0.001, ValueError), (0.002, ValueError)]
