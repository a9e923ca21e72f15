"""The registry's cached snapshot under concurrent requests: real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from inferq.db.session import make_engine, make_sessionmaker
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
