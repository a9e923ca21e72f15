"""Lua scripts bound once per Redis client.

`client.register_script(src)` hashes the source and builds a Script each call; code that runs
per request (a log read, an admission, a worker listing) takes its Script from here instead,
so a request pays only the EVALSHA round trip.
"""

from __future__ import annotations

import weakref

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

_bound: weakref.WeakKeyDictionary[aioredis.Redis, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def script(client: aioredis.Redis, source: str) -> AsyncScript:
    scripts = _bound.setdefault(client, {})
    if source not in scripts:
        scripts[source] = client.register_script(source)
    return scripts[source]
