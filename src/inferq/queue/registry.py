"""Live workers announce themselves in Redis with a heartbeat; the API reads who is alive.

A worker's record is one key with a TTL (`worker_ttl_s`), renewed every `worker_heartbeat_s`,
and listed in an index scored by its expiry. A worker that dies stops renewing it and drops
out of every listing when the key expires.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from inferq.queue.names import WORKER_INDEX_KEY, worker_key
from inferq.queue.scripts import script

LiveInfo = Callable[[], dict[str, Any]]

# Drop the index entries that expired, then read the records of the rest in the same trip.
_LIVE_RECORDS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
if #keys == 0 then return {} end
return redis.call('MGET', unpack(keys))
"""


class BusySlots:
    """Counts the jobs running in this worker process (Celery task threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0

    def enter(self) -> None:
        with self._lock:
            self._busy += 1

    def leave(self) -> None:
        with self._lock:
            self._busy = max(0, self._busy - 1)

    @property
    def busy(self) -> int:
        return self._busy


class Heartbeat:
    """A daemon thread that renews this worker's record until stopped.

    The record is the static `info` merged with what `live` returns at each beat (slots busy,
    KV use, tokens/s), so the registry always shows the worker's current load.
    """

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        info: dict[str, Any],
        every_s: float,
        ttl_s: float,
        live: LiveInfo | None = None,
    ):
        self._redis = client
        self._key = worker_key(worker_id)
        self._info = dict(info)
        self._live = live
        self._every_s = every_s
        self._ttl_ms = int(ttl_s * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferq-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def update(self, live: LiveInfo | None = None, **info: Any) -> None:
        """Add static fields and (or) the live source, then beat at once."""
        self._info.update(info)
        if live is not None:
            self._live = live
        self.beat()

    def record(self) -> dict[str, Any]:
        live = self._live() if self._live is not None else {}
        return {**self._info, **live, "heartbeat_at": round(time.time(), 3)}

    def beat(self) -> None:
        expires_ms = int(time.time() * 1000) + self._ttl_ms
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key, json.dumps(self.record()), px=self._ttl_ms)
            pipe.zadd(WORKER_INDEX_KEY, {self._key: expires_ms})
            pipe.execute()

    def stop(self) -> None:
        self._stop.set()
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            pipe.zrem(WORKER_INDEX_KEY, self._key)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.beat()
            except redis.RedisError:
                continue  # Redis is away; the next beat will try again.


async def live_workers(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired (one round trip)."""
    now_ms = int(time.time() * 1000)
    values = await script(client, _LIVE_RECORDS)(keys=[WORKER_INDEX_KEY], args=[now_ms])
    return [json.loads(value) for value in values if value is not None]


class RegistryView:
    """The live workers as an API process sees them, re-read from Redis at most every `ttl_s`.

    Routing asks it on every submit; one read a second per process keeps that cheap.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: float = 1.0):
        self._redis = client
        self._ttl_s = ttl_s
        self._workers: list[dict[str, Any]] = []
        self._read_at = float("-inf")

    async def workers(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._read_at >= self._ttl_s:
            self._workers = await live_workers(self._redis)
            self._read_at = time.monotonic()
        return self._workers


_views: weakref.WeakKeyDictionary[aioredis.Redis, RegistryView] = weakref.WeakKeyDictionary()


def registry_view(client: aioredis.Redis) -> RegistryView:
    """The one cached view of an API process's Redis client."""
    view = _views.get(client)
    if view is None:
        view = _views[client] = RegistryView(client)
    return view
