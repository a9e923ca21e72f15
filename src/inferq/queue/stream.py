"""Read a job's events in order, from any seq, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from inferq.queue.events import decode_event, is_final
from inferq.queue.hub import EventHub
from inferq.queue.names import event_log_key

# How long a reader waits on the live channel before it re-reads the log anyway; this bounds
# the delay after a pub/sub message lost to a reconnect.
RESYNC_INTERVAL_S = 2.0


async def read_log(client: aioredis.Redis, job_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Events from seq `start` on, as the replay log holds them."""
    raw = await client.lrange(event_log_key(job_id), start, -1)
    return [decode_event(item) for item in raw]


async def stream_events(
    client: aioredis.Redis, hub: EventHub, job_id: str, start: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Yield every event with seq >= start, then live ones, until the job's final event."""
    next_seq = start
    async with hub.subscribe(job_id) as live:
        pending = await read_log(client, job_id, next_seq)
        while True:
            for event in pending:
                if event["seq"] < next_seq:
                    continue  # already sent: it came both from the log and live
                if event["seq"] > next_seq:
                    break  # a gap: fill it from the log below
                yield event
                next_seq += 1
                if is_final(event):
                    return
            pending = await _next_batch(client, job_id, live, next_seq)


async def _next_batch(
    client: aioredis.Redis, job_id: str, live: asyncio.Queue[dict[str, Any]], next_seq: int
) -> list[dict[str, Any]]:
    try:
        event = await asyncio.wait_for(live.get(), RESYNC_INTERVAL_S)
    except TimeoutError:
        return await read_log(client, job_id, next_seq)
    if event["seq"] > next_seq:
        return await read_log(client, job_id, next_seq)
    batch = [event]
    while not live.empty():
        batch.append(live.get_nowait())
    return batch
