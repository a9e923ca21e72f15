"""The registry's cached snapshot under concurrent requests: real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from inferq.db.session import make_engine, make_sessionmaker
from inferq.registry.service import ModelRegistry
from inferq.settings import get_settings


async def test_concurrent_requests_share_one_read_of_the_registry(settings_env: None) -> None:
    """Fifty requests that each held a pooled connection and opened another for their own
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
    finally:
        await client.aclose()
        await engine.dispose()
