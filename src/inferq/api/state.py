"""Resources an API process builds once, in its lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from celery import Celery
from redis import Redis as SyncRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from inferq.auth.verified import VerifiedKeys
from inferq.cache.service import CacheService
from inferq.queue.hub import EventHub
from inferq.settings import Settings
from inferq.tokenizers import Tokenizers


@dataclass
class AppState:
    settings: Settings
    db_engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    # For the worker-side (synchronous) event publisher, which the API uses off the loop.
    sync_redis: SyncRedis
    hub: EventHub
    celery: Celery
    tokenizers: Tokenizers = field(repr=False)
    cache: CacheService = field(repr=False)
    verified_keys: VerifiedKeys = field(repr=False)
