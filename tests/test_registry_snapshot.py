"""The registry's cached snapshot under concurrent requests: real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from inferq.db.session import make_engine, make_sessionmaker
from inferq.queue.names import REGISTRY_GENERATION_KEY
from inferq.registry.service import ModelRegistry
from inferq.settings import get_settings


async def test_concurrent_requests_share_one_read_of_the_registry(settings_env: None) -> None:
    """Fifty chat turns that each held a pooled connection and opened another for their own
    read emptied the pool, and waited on each other until its timeout."""
    settings = get_settings()
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    factory = make_sessionmaker(engine)
    opened = 0

    def sessions() -> Any:
        nonlocal opened
        opened += 1
        return factory()

    try:
        registry = ModelRegistry(settings, client, sessions)  # type: ignore[arg-type]
        first = await asyncio.gather(*(registry.snapshot() for _ in range(50)))
        assert opened == 1 and all(snap is first[0] for snap in first)
        assert first[0].active  # the seeded catalog is there
        await registry.changed()  # a new generation: read again, once
        again = await asyncio.gather(*(registry.snapshot() for _ in range(50)))
        assert opened == 2 and all(snap is again[0] for snap in again)
        assert again[0] is not first[0]
        # Only old: served as it is while one read runs behind it, so a caller never waits
        # for a connection of the pool it may be holding.
        registry._read_at -= 31
        stale = await asyncio.gather(*(registry.snapshot() for _ in range(50)))
        assert all(snap is again[0] for snap in stale) and opened == 3
        assert registry._reading is not None
        await registry._reading
        assert (await registry.snapshot()) is not again[0] and opened == 3
    finally:
        await client.aclose()
        await engine.dispose()


async def _until(condition: Any, timeout_s: float = 2.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_change_reaches_another_process_without_reading_the_counter(
    settings_env: None,
) -> None:
    """A started registry follows the announcements: no GET of the generation per request."""
    settings = get_settings()
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    changer_client = aioredis.Redis.from_url(settings.redis_url)
    follower_client = aioredis.Redis.from_url(settings.redis_url)
    changer = ModelRegistry(settings, changer_client, sessions)
    follower = ModelRegistry(settings, follower_client, sessions)
    gets = 0
    real_get = follower_client.get

    async def counted_get(*args: Any) -> Any:
        nonlocal gets
        gets += 1
        return await real_get(*args)

    try:
        await follower.start()
        assert await _until(lambda: follower._follower.current is not None)
        before = await follower.snapshot()
        follower_client.get = counted_get  # type: ignore[method-assign]
        assert (await follower.snapshot()) is before
        await changer.changed()
        expected = int(await changer_client.get(REGISTRY_GENERATION_KEY))
        assert await _until(lambda: follower._follower.current == expected)
        after = await follower.snapshot()
        assert after is not before, "the announced change was not read"
        assert gets == 0
    finally:
        await follower.stop()
        await changer_client.aclose()
        await follower_client.aclose()
        await engine.dispose()


async def test_a_lost_subscription_re_reads_the_counter(settings_env: None) -> None:
    """An announcement made while the connection is down is lost: the reconnect re-reads."""
    settings = get_settings()
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(settings, client, make_sessionmaker(engine))
    try:
        await registry.start()
        assert await _until(lambda: registry._follower.current is not None)
        # A change whose announcement never arrives, then the subscription's connection dies.
        missed = int(await client.incr(REGISTRY_GENERATION_KEY))
        assert registry._follower.current == missed - 1
        writer = registry._follower._pubsub.connection._writer  # type: ignore[union-attr]
        host, port = writer.get_extra_info("sockname")[:2]
        assert await client.client_kill_filter(_type=None, addr=f"{host}:{port}") == 1
        assert await _until(lambda: registry._follower.current == missed)
    finally:
        await registry.stop()
        await client.aclose()
        await engine.dispose()
