"""Redis clients for the API and the workers, built one way.

After Redis restarts, every pooled connection is dead; without a retry, each one would cost a
request its 503 once, long after Redis is back. One immediate retry on a *connection* error
replaces the dead socket. Timeouts are not retried: a hung Redis must still answer 503 within
one socket timeout.

The pool blocks rather than fails when all its connections are in use: redis-py's default
pool refuses the 101st concurrent command with "Too many connections", which a burst of
1,000 SSE streams opening at once reaches. A caller waits up to the socket timeout for a free
connection instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

_RETRIED = (RedisConnectionError,)
MAX_CONNECTIONS = 512


def async_redis(url: str, timeout_s: float, **options: Any) -> aioredis.Redis:
    retry = AsyncRetry(NoBackoff(), 1, supported_errors=_RETRIED)
    pool = aioredis.BlockingConnectionPool.from_url(url, **_pooled(timeout_s, retry), **options)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def sync_redis(url: str, timeout_s: float, **options: Any) -> redis.Redis:
    retry = Retry(NoBackoff(), 1, supported_errors=_RETRIED)
    pool = redis.BlockingConnectionPool.from_url(url, **_pooled(timeout_s, retry), **options)
    return redis.Redis.from_pool(pool)


def _pooled(timeout_s: float, retry: Retry | AsyncRetry) -> dict[str, Any]:
    return {
        "max_connections": MAX_CONNECTIONS,
        "timeout": timeout_s,  # the longest wait for a free connection
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
    }


# How long a pub/sub connection's close may take before it is dropped unclosed.
_PUBSUB_CLOSE_S = 1.0


async def close_pubsub(pubsub: aioredis.client.PubSub) -> None:
    """Close a pub/sub connection at shutdown without ever hanging on it.

    redis-py 8's `PubSub.aclose` can wait forever on the socket's `wait_closed` (redis-py
    issue 3941): seen here as an API that never finished its shutdown, once in 300 tests.
    """
    try:
        await asyncio.wait_for(pubsub.aclose(), _PUBSUB_CLOSE_S)
    except (RedisError, OSError):  # TimeoutError is an OSError
        if pubsub.connection is not None:
            await pubsub.connection.disconnect(nowait=True)
