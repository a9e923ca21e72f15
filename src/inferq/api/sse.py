"""Server-Sent Events framing of job events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from inferq.api.shutdown import shutdown_signal
from inferq.db.models import Job, JobStatus
from inferq.queue.hub import EventHub
from inferq.queue.stream import read_log, stream_events


def sse_frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


def events_from_record(job: Job) -> list[dict[str, Any]]:
    """The events of a finished job whose replay log has expired, rebuilt from PostgreSQL.

    The per-token split is gone with the log, so the output comes back as one token event.
    """
    events: list[dict[str, Any]] = []
    if job.output:
        events.append({"seq": 0, "type": "token", "text": job.output})
    final: dict[str, Any] = {"seq": len(events), "usage": job.usage, "timings": job.timings}
    if job.status == JobStatus.FAILED.value:
        final.update(type="error", error=job.error)
    else:
        final.update(type="end", finish_reason=job.finish_reason)
    events.append(final)
    return events


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
    job_id = str(job.id)
    if JobStatus(job.status).is_final and not await read_log(client, job_id, 0):
        for event in events_from_record(job)[start:]:
            yield sse_frame(event)
        return
    async for event in stream_events(client, hub, job_id, start):
        yield sse_frame(event)
