"""Stopping background tasks (inferq.background)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from inferq.background import cancel_task


async def test_a_task_that_absorbs_a_cancellation_is_cancelled_again_until_it_stops() -> None:
    absorbed = 0

    async def loop_like_a_watcher() -> None:
        nonlocal absorbed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if absorbed == 2:
                    raise
                absorbed += 1  # what a library that loses a cancellation does

    task = asyncio.create_task(loop_like_a_watcher())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_task(task), timeout=3)
    assert task.cancelled() and absorbed == 2


async def test_a_task_that_never_stops_is_given_up_after_the_patience() -> None:
    deaf = True

    async def absorbs_all() -> None:
        while deaf:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    task = asyncio.create_task(absorbs_all())
    await asyncio.sleep(0)
    started = time.monotonic()
    await cancel_task(task, patience_s=0.5)
    assert 0.5 <= time.monotonic() - started < 2 and not task.done()
    deaf = False  # leave nothing running for the next test
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()
