"""Feeds job outcomes to the pools' circuit breakers, read from the jobs table.

Workers stay unaware of breakers: one API process at a time (a Redis lock) reads the jobs that
ended since its cursor, and counts each once (a per-job Redis marker), so several API
processes and overlapping reads never count an outcome twice. The read overlaps the previous
one by a few seconds, because a job's `finished_at` is set before its transaction commits.
A cancelled job, or one that failed by its request's own fault (`REQUEST_ERROR_CODES`), says
nothing about the pool and is not counted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.background import cancel_task
from inferq.db.models import Job, JobStatus
from inferq.errors import REQUEST_ERROR_CODES
from inferq.queue.names import BREAKER_CURSOR_KEY, BREAKER_WATCH_LOCK_KEY, breaker_seen_key
from inferq.registry.breaker import Breakers
from inferq.settings import Settings

log = logging.getLogger(__name__)

_OVERLAP = timedelta(seconds=10)
_SEEN_TTL_S = 600
_BATCH = 1000
_REMEMBERED = 4 * _BATCH  # job ids this process has already checked: the overlap re-reads them
_OUTCOMES = (JobStatus.COMPLETED.value, JobStatus.FAILED.value)
# Hold the lock, or take it when free: one watcher acts at a time.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""


def outcomes_since(
    since: datetime, after: tuple[datetime, uuid.UUID] | None = None
) -> Select[tuple[Any, ...]]:
    """Queued jobs that ended after `since`, oldest first; past `after` (the last row of the
    page before, by `finished_at` and id) for the next page.

    No status in the WHERE: with it, a planner whose statistics are stale (autovacuum off, as
    on this project's machines) scanned every finished job by the status index, 66 ms twice a
    second at 61,000 jobs. `queue IS NOT NULL` is the predicate of ix_jobs_queue_finished_at,
    which leaves out the cache hits (migration 0010).
    """
    query = select(Job.id, Job.queue, Job.status, Job.finished_at, Job.error).where(
        Job.queue.is_not(None), Job.finished_at > since
    )
    if after is not None:
        query = query.where(tuple_(Job.finished_at, Job.id) > tuple_(*after))
    return query.order_by(Job.finished_at, Job.id).limit(_BATCH)


class BreakerWatcher:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
        breakers: Breakers,
    ):
        self._every_s = settings.breaker_watch_s
        self._redis = client
        self._sessions = sessions
        self._breakers = breakers
        self._token = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._checked: OrderedDict[uuid.UUID, None] = OrderedDict()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inferq-breaker-watcher")

    async def stop(self) -> None:
        await cancel_task(self._task)

    async def _run(self) -> None:
        while True:
            try:
                if await self._hold():
                    await self.tick()
            except Exception:  # the database or Redis is away; the next tick retries
                log.warning("breaker watcher tick failed", exc_info=True)
            await asyncio.sleep(self._every_s)

    async def _hold(self) -> bool:
        ttl_ms = str(int(self._every_s * 4000))
        held = await self._redis.eval(_HOLD, 1, BREAKER_WATCH_LOCK_KEY, self._token, ttl_ms)
        return bool(held)

    async def tick(self) -> int:
        """Count the outcomes of jobs ended since the cursor; returns how many were new."""
        raw = await self._redis.get(BREAKER_CURSOR_KEY)
        since = (
            datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw)
            if raw
            else datetime.now(UTC)
        ) - _OVERLAP
        # Page to the end: with one page, more than _BATCH jobs ending within the overlap
        # (1,000 idle jobs cancelled at once) held the cursor there, and the rest went uncounted.
        counted, last, after = 0, None, None
        while True:
            async with self._sessions() as session:
                rows = (await session.execute(outcomes_since(since, after))).all()
            for row in rows:
                counted += await self._count(*row)
            last = rows[-1] if rows else last
            if len(rows) < _BATCH:
                break
            after = (rows[-1].finished_at, rows[-1].id)
        if last is not None and last.finished_at is not None:
            await self._redis.set(BREAKER_CURSOR_KEY, last.finished_at.isoformat())
        elif not raw:
            await self._redis.set(BREAKER_CURSOR_KEY, datetime.now(UTC).isoformat())
        return counted

    async def _count(
        self, job_id: uuid.UUID, queue: str, status: str, _: datetime, error: Any
    ) -> int:
        """1 if this job's outcome is new to every watcher and now counted against its pool.

        A job this process has checked is skipped without a Redis trip: every tick re-reads
        the last ten seconds, and after a burst that was hundreds of SETs twice a second, 6 %
        of a core with nothing happening."""
        if job_id in self._checked:
            return 0
        seen = breaker_seen_key(str(job_id))
        new = (
            status in _OUTCOMES
            and not _request_caused(error)  # else: cancelled, or not the pool's doing
            and bool(await self._redis.set(seen, "1", nx=True, ex=_SEEN_TTL_S))
        )
        if new:
            await self._breakers.record(queue, str(job_id), status == JobStatus.COMPLETED)
        self._checked[job_id] = None
        if len(self._checked) > _REMEMBERED:
            self._checked.popitem(last=False)
        return int(new)


def _request_caused(error: dict[str, Any] | None) -> bool:
    return isinstance(error, dict) and error.get("code") in REQUEST_ERROR_CODES
