"""Reading L2 answers, counting, stats and purges: the Redis and SQL chores of the caches."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.cache.exact import CachedAnswer
from inferq.cache.index import Match, SemanticIndex
from inferq.cache.keys import quote_segment
from inferq.cache.semantic import change_message, delete_entries
from inferq.queue.names import (
    CACHE_L2_CHANNEL,
    CACHE_STATS_PATTERN,
    CACHE_TENANT_INDEX_PATTERN,
    cache_answer_key,
    cache_stats_key,
    cache_tenant_index_key,
)

_DELETE_CHUNK = 500
LAYERS = ("exact", "semantic")


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _tenant_of(index_key: str) -> str:
    return unquote(index_key.rsplit(":", 1)[1])


class CacheStore:
    def __init__(
        self,
        client: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
        index: SemanticIndex,
    ):
        self._redis = client
        self._sessions = sessions
        self._index = index

    async def semantic_answer(self, match: Match | None, tenant: str) -> CachedAnswer | None:
        """The L1 answer an L2 match points at, counting the lookup, in one round trip."""
        stats = cache_stats_key(quote_segment(tenant))
        if match is None:
            await self._redis.hincrby(stats, "semantic:miss", 1)
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(match.entry.answer_key)
            pipe.hincrby(stats, "semantic:hit", 1)
            raw, _ = await pipe.execute()
        if raw is None:
            # Evicted: count it as the miss it turned out to be.
            await self._redis.hincrby(stats, "semantic:hit", -1)
            await self._redis.hincrby(stats, "semantic:miss", 1)
            return None
        return CachedAnswer.decode(raw)

    async def stats(self, tenant: str | None) -> dict[str, Any]:
        """Entries and hit rates per layer, for one tenant or summed over all."""
        counts = {f"{layer}:{result}": 0 for layer in LAYERS for result in ("hit", "miss")}
        for key in await self._keys(CACHE_STATS_PATTERN, cache_stats_key, tenant):
            for field, value in (await self._redis.hgetall(key)).items():
                name = _text(field)
                counts[name] = counts.get(name, 0) + int(value)
        now = time.time()
        l1_entries = 0
        for key in await self._keys(CACHE_TENANT_INDEX_PATTERN, cache_tenant_index_key, tenant):
            l1_entries += int(await self._redis.zcount(key, now, "+inf"))
        entries = {"exact": l1_entries, "semantic": self._index.count(tenant)}
        return {layer: _layer(counts, layer, entries[layer]) for layer in LAYERS}

    async def _keys(self, pattern: str, key_of: Any, tenant: str | None) -> list[str]:
        if tenant is not None:
            return [key_of(quote_segment(tenant))]
        return [_text(k) async for k in self._redis.scan_iter(match=pattern, count=500)]

    async def purge(self, tenant: str | None, model: str | None) -> dict[str, int]:
        """Forget a tenant's or a model's answers in both layers, in every API process."""
        exact = 0
        keys = await self._keys(CACHE_TENANT_INDEX_PATTERN, cache_tenant_index_key, tenant)
        for index_key in keys:
            exact += await self._purge_l1(index_key, model)
        async with self._sessions() as session:
            semantic = await delete_entries(session, tenant, model)
        self._index.purge(tenant, model)
        await self._redis.publish(
            CACHE_L2_CHANNEL, change_message("purge", tenant=tenant, model=model)
        )
        return {"exact": exact, "semantic": semantic}

    async def _purge_l1(self, index_key: str, model: str | None) -> int:
        raw = await self._redis.zrange(index_key, 0, -1)
        members = [_text(m) for m in raw if isinstance(m, bytes | str)]
        if model is not None:
            tenant_q = quote_segment(_tenant_of(index_key))
            prefix = cache_answer_key(tenant_q, quote_segment(model), "")
            members = [m for m in members if m.startswith(prefix)]
        removed = 0
        for start in range(0, len(members), _DELETE_CHUNK):
            chunk = members[start : start + _DELETE_CHUNK]
            removed += int(await self._redis.delete(*chunk))
            await self._redis.zrem(index_key, *chunk)
        return removed


def _layer(counts: dict[str, int], layer: str, entries: int) -> dict[str, Any]:
    hits, misses = counts[f"{layer}:hit"], counts[f"{layer}:miss"]
    lookups = hits + misses
    return {
        "entries": entries,
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / lookups, 4) if lookups else None,
    }
