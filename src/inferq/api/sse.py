"""Server-Sent Events framing of job events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from inferq.api.job_events import job_events
from inferq.api.shutdown import shutdown_signal
from inferq.db.models import Job
from inferq.queue.hub import EventHub


def sse_frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


# No caching, and no buffering by a proxy in front (nginx's header): events must flow as sent.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_S = 15.0
SHUTDOWN_COMMENT = b": server shutting down; reconnect with Last-Event-ID\n\n"


async def with_keepalive(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass frames through; send a comment when idle, and end politely on shutdown."""
    iterator = aiter(frames)
    next_frame = asyncio.ensure_future(anext(iterator))
    stop = asyncio.ensure_future(shutdown_signal.wait())
    try:
        while True:
            done, _ = await asyncio.wait(
                {next_frame, stop}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if next_frame in done:
                try:
                    yield next_frame.result()
                except StopAsyncIteration:
                    return
                next_frame = asyncio.ensure_future(anext(iterator))
            elif stop in done:
                yield SHUTDOWN_COMMENT
                return
            else:
                yield b": keepalive\n\n"
    finally:
        for task in (next_frame, stop):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await next_frame
        await iterator.aclose()  # type: ignore[attr-defined]


async def job_event_stream(
    client: aioredis.Redis, hub: EventHub, job: Job, start: int
) -> AsyncIterator[bytes]:
    """Every event of the job from seq `start`, replayed then live, as SSE frames."""
    async for event in job_events(client, hub, job, start):
        yield sse_frame(event)


async def finished_frames(client: aioredis.Redis, hub: EventHub, job: Job, start: int) -> bytes:
    """The SSE frames of a finished job from seq `start`, all of them: every event is there
    already (a cache hit, a late reader), so they make one body, not a stream."""
    return b"".join([sse_frame(event) async for event in job_events(client, hub, job, start)])
