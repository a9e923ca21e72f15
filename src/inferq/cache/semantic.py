"""L2 entries: their SQL, and the sync that keeps every API process's index current.

The index is built from PostgreSQL at start. A worker that completes a job with an entry
PUBLISHes the entry id on CACHE_L2_CHANNEL; every API process loads that row and indexes
it (well within a second). A purge is published the same way. A periodic re-read of the
entries finished lately backs up any message lost while the subscription reconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, Select, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.background import cancel_task
from inferq.cache.index import IndexedEntry, SemanticIndex
from inferq.cache.models import CacheEntry
from inferq.db.models import Job, JobStatus
from inferq.queue.clients import close_pubsub
from inferq.queue.names import CACHE_L2_CHANNEL

log = logging.getLogger(__name__)

# How far back a re-read looks beyond the last one (clock skew between hosts, slow commits).
_RESYNC_OVERLAP_S = 10.0
# Rows a re-read loads per query: the event loop serves requests between chunks.
_LOAD_CHUNK = 2000


def _valid(what: Any = CacheEntry) -> Select[Any]:
    """Entries (or a column of them) whose job completed and that have not expired."""
    return (
        select(what)
        .join(Job, Job.id == CacheEntry.job_id)
        .where(Job.status == JobStatus.COMPLETED.value, CacheEntry.expires_at > datetime.now(UTC))
    )


def _scope(tenant: str | None, model: str | None) -> ColumnElement[bool]:
    clauses = []
    if tenant is not None:
        clauses.append(CacheEntry.tenant == tenant)
    if model is not None:
        clauses.append(CacheEntry.model == model)
    return and_(*clauses)


def add_to_index(index: SemanticIndex, row: CacheEntry) -> bool:
    vector = np.frombuffer(row.embedding, dtype=np.float32)
    entry = IndexedEntry(str(row.id), row.answer_key, row.expires_at.timestamp(), row.prompt)
    return index.add((row.tenant, row.model, row.context_hash, row.params_hash), entry, vector)


async def delete_entries(session: AsyncSession, tenant: str | None, model: str | None) -> int:
    result = await session.execute(delete(CacheEntry).where(_scope(tenant, model)))
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_expired(session: AsyncSession) -> int:
    """Expired entries never serve again (the index skips them); drop their rows."""
    query = delete(CacheEntry).where(CacheEntry.expires_at <= datetime.now(UTC))
    result = await session.execute(query)
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def change_message(op: str, **fields: Any) -> str:
    return json.dumps({"op": op, **fields}, separators=(",", ":"))


class IndexSync:
    """Builds the index from PostgreSQL and follows CACHE_L2_CHANNEL."""

    def __init__(
        self,
        client: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
        index: SemanticIndex,
        resync_s: float,
    ):
        self._redis = client
        self._sessions = sessions
        self._index = index
        self._resync_s = resync_s
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None
        self._synced_at = 0.0

    async def start(self) -> None:
        # Subscribe before the full load, so an entry completed in between is not missed.
        await self._pubsub.subscribe(CACHE_L2_CHANNEL)
        started = time.time()
        async with self._sessions() as session:
            await delete_expired(session)
        loaded = await self._load(_valid())
        self._synced_at = started
        log.info("semantic index built", extra={"entries": loaded})
        self._task = asyncio.create_task(self._run(), name="inferq-cache-sync")

    async def stop(self) -> None:
        await cancel_task(self._task)
        await close_pubsub(self._pubsub)

    async def _load(self, query: Select[CacheEntry]) -> int:
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return sum(add_to_index(self._index, row) for row in rows)

    async def catch_up(self, since: datetime) -> int:
        """Entries of jobs finished since `since` that are not indexed yet. Their ids come
        first: a re-read mostly finds rows already here, and 100,000 of those (the harness's
        decoys share one job) cost a column, not 4 s of ORM rows on the event loop."""
        recent = Job.finished_at >= since
        async with self._sessions() as session:
            ids = (await session.scalars(_valid(CacheEntry.id).where(recent))).all()
        missing = [entry_id for entry_id in ids if str(entry_id) not in self._index]
        loaded = 0
        for start in range(0, len(missing), _LOAD_CHUNK):
            chunk = missing[start : start + _LOAD_CHUNK]
            loaded += await self._load(_valid().where(CacheEntry.id.in_(chunk)))
        return loaded

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (RedisError, ConnectionError, OSError) as exc:
                log.warning("cache sync lost redis, reconnecting", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("cache sync failed; retrying")
                await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                await self.handle(json.loads(message["data"]))
            if time.time() - self._synced_at >= self._resync_s:
                await self._resync()

    async def handle(self, change: dict[str, Any]) -> None:
        if change.get("op") == "add":
            entry_id = str(change["id"])
            if entry_id not in self._index:
                await self._load(_valid().where(CacheEntry.id == uuid.UUID(entry_id)))
        elif change.get("op") == "purge":
            self._index.purge(change.get("tenant"), change.get("model"))

    async def _resync(self) -> None:
        since = datetime.fromtimestamp(self._synced_at - _RESYNC_OVERLAP_S, UTC)
        self._synced_at = time.time()
        added = await self.catch_up(since)
        async with self._sessions() as session:
            await delete_expired(session)
        if added:
            log.info("semantic index caught up", extra={"entries": added})


def entry_expiry(ttl_s: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ttl_s)
