"""Live workers announce themselves in Redis with a heartbeat; the API reads who is alive."""

from __future__ import annotations

import json
import threading
from typing import Any

import redis
import redis.asyncio as aioredis

from inferq.queue.names import WORKER_KEY_PATTERN, worker_key


class Heartbeat:
    """A daemon thread that renews this worker's record until stopped."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        info: dict[str, Any],
        every_s: float,
        ttl_s: float,
    ):
        self._redis = client
        self._key = worker_key(worker_id)
        self._info = info
        self._every_s = every_s
        self._ttl_ms = int(ttl_s * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferq-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        self._redis.set(self._key, json.dumps(self._info), px=self._ttl_ms)

    def stop(self) -> None:
        self._stop.set()
        self._redis.delete(self._key)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.beat()
            except redis.RedisError:
                continue  # Redis is away; the next beat will try again.


async def live_workers(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired."""
    keys = [key async for key in client.scan_iter(match=WORKER_KEY_PATTERN, count=500)]
    if not keys:
        return []
    values = await client.mget(keys)
    return [json.loads(value) for value in values if value is not None]
