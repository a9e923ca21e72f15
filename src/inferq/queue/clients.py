"""Redis clients for the API and the workers, built one way.

After Redis restarts, every pooled connection is dead; without a retry, each one would cost a
request its 503 once, long after Redis is back. One immediate retry on a *connection* error
replaces the dead socket. Timeouts are not retried: a hung Redis must still answer 503 within
one socket timeout.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

_RETRIED = (RedisConnectionError,)


def async_redis(url: str, timeout_s: float, **options: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=AsyncRetry(NoBackoff(), 1, supported_errors=_RETRIED),
        **options,
    )


def sync_redis(url: str, timeout_s: float, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=_RETRIED),
        **options,
    )
