"""Graceful API shutdown: open streams learn that the process is going away.

uvicorn stops accepting connections on SIGTERM and then waits for open ones to finish; a
token stream may never finish by itself. `ShutdownAwareServer` raises the signal below, and
every SSE stream (and WebSocket) ends politely on it, so clients reconnect elsewhere with
their Last-Event-ID.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn


class ShutdownSignal:
    """An asyncio event that can be set from a signal handler."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self) -> None:
        """Attach to the running loop (the API's lifespan calls this)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def request(self) -> None:
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    @property
    def requested(self) -> bool:
        return self._event is not None and self._event.is_set()

    async def wait(self) -> None:
        if self._event is None:
            await asyncio.Event().wait()  # never bound: never shutting down
        else:
            await self._event.wait()


shutdown_signal = ShutdownSignal()


class ShutdownAwareServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        shutdown_signal.request()
        super().handle_exit(sig, frame)
