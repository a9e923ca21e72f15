"""Helpers for the background tasks an API process runs (hub, reconciler, cache sync, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

_RECANCEL_S = 0.2


def spawn(
    tasks: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, Any], name: str | None = None
) -> asyncio.Task[Any]:
    """Start `coro` as a task held in `tasks` until it ends: the loop keeps only weak
    references to tasks, so one nobody holds can vanish mid-run."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def cancel_task(task: asyncio.Task[Any] | None, patience_s: float = 5.0) -> None:
    """Cancel a background task and wait until it has really stopped.

    A cancellation can be absorbed on its way through a library (redis-py's asyncio client
    loses one that lands in its read timeout: redis-py issues 2028 and 2551). An API's breaker
    watcher once ticked on after its shutdown had cancelled it, and the shutdown waited for it
    forever. So the task is cancelled again until it ends, for at most `patience_s`.
    """
    if task is None:
        return
    deadline = asyncio.get_running_loop().time() + patience_s
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_S)
        if not task.done() and asyncio.get_running_loop().time() > deadline:
            log.warning("background task did not stop", extra={"task": task.get_name()})
            return
    with contextlib.suppress(asyncio.CancelledError):
        await task
