"""L1: whole answers in Redis under a hash of everything that changes the output.

A lookup is one round trip (a script that reads the answer and counts the result). A fill is
one script too: SET with a TTL, record the key in the tenant's index scored by its expiry,
drop expired and over-bound keys of that tenant, and announce a new L2 entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from inferq.cache.keys import quote_segment
from inferq.queue.names import CACHE_L2_CHANNEL, cache_stats_key, cache_tenant_index_key

_LOOKUP = """
local value = redis.call('GET', KEYS[1])
redis.call('HINCRBY', KEYS[2], value and 'exact:hit' or 'exact:miss', 1)
return value
"""

_FILL = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), KEYS[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
    local evicted = redis.call('ZPOPMIN', KEYS[2], over)
    for i = 1, #evicted, 2 do redis.call('DEL', evicted[i]) end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', KEYS[3], ARGV[5]) end
return 1
"""


@dataclass(frozen=True)
class CachedAnswer:
    """A whole answer: its text as it was streamed (the pieces), why it ended, and its usage."""

    pieces: list[str]
    finish_reason: str
    usage: dict[str, int]
    source_job: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def encode(self) -> str:
        return json.dumps(
            {"p": self.pieces, "f": self.finish_reason, "u": self.usage, "j": self.source_job},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> CachedAnswer:
        data: dict[str, Any] = json.loads(raw)
        return cls(data["p"], data["f"], data["u"], data["j"])


class ExactCache:
    """The API side of L1."""

    def __init__(self, client: aioredis.Redis):
        self._lookup = client.register_script(_LOOKUP)

    async def get(self, key: str, tenant: str) -> CachedAnswer | None:
        raw = await self._lookup(keys=[key, cache_stats_key(quote_segment(tenant))])
        return CachedAnswer.decode(raw) if raw else None


def fill_answer(
    client: redis.Redis,
    key: str,
    tenant: str,
    answer: CachedAnswer,
    ttl_s: int,
    now: float,
    max_entries: int,
    l2_message: str = "",
) -> None:
    """Store an answer for `ttl_s` and keep the tenant within `max_entries` (worker side)."""
    keys = [key, cache_tenant_index_key(quote_segment(tenant)), CACHE_L2_CHANNEL]
    args: list[str | int] = [answer.encode(), ttl_s, int(now), max_entries, l2_message]
    client.eval(_FILL, len(keys), *keys, *args)
