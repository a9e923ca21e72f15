"""The event reader against real Redis: replay, live, de-duplication and gap repair."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from inferq.queue.hub import EventHub
from inferq.queue.names import event_channel, event_log_key
from inferq.queue.publisher import EventPublisher
from inferq.queue.stream import stream_events
from inferq.settings import get_settings


@pytest.fixture
async def hub() -> AsyncIterator[tuple[aioredis.Redis, EventHub]]:
    client = aioredis.Redis.from_url(get_settings().redis_url)
    event_hub = EventHub(client)
    await event_hub.start()
    yield client, event_hub
    await event_hub.stop()
    await client.aclose()


async def collect(client: aioredis.Redis, hub: EventHub, job_id: str, start: int = 0) -> list[int]:
    return [e["seq"] async for e in stream_events(client, hub, job_id, start)]


async def test_replay_then_live_without_duplicates(
    hub: tuple[aioredis.Redis, EventHub],
) -> None:
    client, event_hub = hub
    job_id = str(uuid.uuid4())
    publisher = EventPublisher(redis.Redis.from_url(get_settings().redis_url), job_id, 60)
    for _ in range(3):
        publisher.emit("token", text="x")
    reader = asyncio.create_task(collect(client, event_hub, job_id))
    await asyncio.sleep(0.1)
    for _ in range(3):
        publisher.emit("token", text="y")
    publisher.emit("end", finish_reason="stop")
    assert await asyncio.wait_for(reader, 5) == list(range(7))


async def test_a_lost_live_message_is_recovered_from_the_log(
    hub: tuple[aioredis.Redis, EventHub],
) -> None:
    client, event_hub = hub
    job_id = str(uuid.uuid4())
    sync = redis.Redis.from_url(get_settings().redis_url)
    reader = asyncio.create_task(collect(client, event_hub, job_id))
    await asyncio.sleep(0.1)
    # seq 0 reaches the log but is never published: the reader sees seq 1 first (a gap).
    sync.rpush(event_log_key(job_id), '{"seq":0,"type":"token","text":"a"}')
    publisher = EventPublisher(sync, job_id, 60, first_seq=1)
    publisher.emit("token", text="b")
    publisher.emit("end", finish_reason="stop")
    assert await asyncio.wait_for(reader, 5) == [0, 1, 2]
    assert sync.pubsub_numsub(event_channel(job_id))[0][1] == 0, "unsubscribed after the end"
