"""Read a job's events in order, from any seq, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferq.queue.events import decode_event, is_final
from inferq.queue.hub import EventHub
from inferq.queue.names import event_log_key
from inferq.queue.scripts import script

# How long a reader waits on the live channel before it re-reads the log anyway; this bounds
# the delay after a pub/sub message lost to a reconnect.
RESYNC_INTERVAL_S = 2.0

T = TypeVar("T")

# How long a reader rides out a Redis outage (keeping its client's connection open) before
# it gives up; a worker waits out the same outage before its tokens flow again.
REDIS_PATIENCE_S = 20.0

# The log's first event need not be seq 0: after Redis lost a log, the job's next attempt
# starts a new one above every seq used before (see `attempt_seq_floor`). Map seq to index.
_READ_FROM_SEQ = """
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {} end
local base = tonumber(string.match(first, '^{"seq":(%d+)'))
local from = tonumber(ARGV[1]) - base
if from < 0 then from = 0 end
return redis.call('LRANGE', KEYS[1], from, -1)
"""


async def read_log(client: aioredis.Redis, job_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Events from seq `start` on (or from the log's first event, if that is later)."""
    raw = await script(client, _READ_FROM_SEQ)(keys=[event_log_key(job_id)], args=[start])
    return [decode_event(item) for item in raw]


async def stream_events(
    client: aioredis.Redis, hub: EventHub, job_id: str, start: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Yield every event with seq >= start, then live ones, until the job's final event."""
    next_seq = start
    async with hub.subscribe(job_id) as live:
        pending, from_log = await _patiently(lambda: read_log(client, job_id, next_seq)), True
        while True:
            if from_log and pending and pending[0]["seq"] > next_seq:
                # The log starts later than we are: Redis lost the events in between, and
                # the attempt that wrote them with it. Carry on from what there is.
                next_seq = pending[0]["seq"]
            for event in pending:
                if event["seq"] < next_seq:
                    continue  # already sent: it came both from the log and live
                if event["seq"] > next_seq:
                    break  # a gap: fill it from the log below
                yield event
                next_seq += 1
                if is_final(event):
                    return
            pending, from_log = await _patiently(
                lambda seq=next_seq: _next_batch(client, job_id, live, seq)  # type: ignore[misc]
            )


async def _patiently(call: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis read, retrying it while Redis is unreachable for up to REDIS_PATIENCE_S."""
    deadline = time.monotonic() + REDIS_PATIENCE_S
    while True:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _next_batch(
    client: aioredis.Redis, job_id: str, live: asyncio.Queue[dict[str, Any]], next_seq: int
) -> tuple[list[dict[str, Any]], bool]:
    """The next events to look at, and whether they come from the log (not live)."""
    try:
        event = await asyncio.wait_for(live.get(), RESYNC_INTERVAL_S)
    except TimeoutError:
        return await read_log(client, job_id, next_seq), True
    if event["seq"] > next_seq:
        return await read_log(client, job_id, next_seq), True
    batch = [event]
    while not live.empty():
        batch.append(live.get_nowait())
    return batch, False
