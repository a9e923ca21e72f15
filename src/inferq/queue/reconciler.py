"""Requeue what a dead worker or an emptied Redis left behind; PostgreSQL is the record.

Every API process runs a `Reconciler` in its lifespan; a Redis lock lets one of them act at
a time, and another takes over within seconds when that process dies. (It runs in the API
because the API already holds everything it needs: PostgreSQL, Redis and a Celery producer,
and because it must not die with the workers it watches.) Every action is also fenced in
PostgreSQL by the job's attempt number, so two reconcilers at once would still requeue a job
only once.

Each pass:

- a `running` job whose lease is gone (its worker died, or Redis restarted) goes back to
  `queued` and gets a new task, or ends `failed` with `worker_lost` after `max_attempts`;
- every few seconds, a `queued` job with no task in the broker (Redis restarted, or the API
  died between its commit and its send) gets a new task. A duplicate task is harmless: the
  claim drops a delivery of a job that is not `queued`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from celery import Celery
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.background import cancel_task
from inferq.db import jobs as job_repo
from inferq.db.models import JobStatus
from inferq.queue.clients import async_redis, sync_redis
from inferq.queue.dispatch import send_job
from inferq.queue.names import (
    BROKER_UNACKED_INDEX_KEY,
    BROKER_UNACKED_KEY,
    RECONCILER_LOCK_KEY,
    attempt_key,
    lease_key,
    queue_name,
)
from inferq.queue.publisher import announce_final
from inferq.settings import Settings

log = logging.getLogger(__name__)

# A task delivered to a worker longer ago than this, whose job is still `queued`, belonged to
# a worker that died before it claimed it: kombu would only restore it after an hour.
_STALE_DELIVERY_S = 30.0
# A queued job younger than this may be between its commit and its send.
_QUEUED_GRACE_S = 5.0

# KEYS: lock. ARGV: token, ttl ms. Extends the lock only for its holder.
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: attempt, lease. ARGV: the next attempt, fence ttl s. Fences out the lost attempt.
_FENCE_OUT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
redis.call('DEL', KEYS[2])
return 0
"""


@dataclass
class PassReport:
    """What one pass did (for logs and tests)."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
        celery: Celery,
    ):
        self._settings = settings
        self._redis = client
        self._sessions = sessions
        self._celery = celery
        self._broker = async_redis(settings.celery_broker_url, 2)
        # The worker_lost event is written with the worker's (synchronous) publisher.
        self._sync_redis = sync_redis(settings.redis_url, 2)
        self._token = uuid.uuid4().hex
        self._next_scan = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inferq-reconciler")

    async def stop(self) -> None:
        await cancel_task(self._task)
        with contextlib.suppress(redis.RedisError, OSError):
            if await self._redis.get(RECONCILER_LOCK_KEY) == self._token.encode():
                await self._redis.delete(RECONCILER_LOCK_KEY)
        await self._broker.aclose()
        self._sync_redis.close()

    async def _run(self) -> None:
        while True:
            try:
                if await self._hold_lock():
                    report = await self.reconcile_once()
                    if report.requeued or report.failed or report.resent:
                        log.info("reconciled", extra=vars(report))
            except Exception as exc:  # Redis or PostgreSQL away: try again next pass
                log.warning(
                    "reconcile pass failed", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
            await asyncio.sleep(self._settings.reconcile_interval_s)

    async def _hold_lock(self) -> bool:
        ttl_ms = int(max(5.0, 5 * self._settings.reconcile_interval_s) * 1000)
        if await self._redis.set(RECONCILER_LOCK_KEY, self._token, nx=True, px=ttl_ms):
            return True
        renew = self._redis.register_script(_RENEW_LOCK)
        return bool(await renew(keys=[RECONCILER_LOCK_KEY], args=[self._token, ttl_ms]))

    async def reconcile_once(self, *, scan_queued: bool | None = None) -> PassReport:
        """One pass; `scan_queued` forces (or skips) the broker scan regardless of its timer."""
        report = PassReport()
        for job in await self._lost_running():
            await self._recover(job, report)
        due = time.monotonic() >= self._next_scan
        if scan_queued if scan_queued is not None else due:
            self._next_scan = time.monotonic() + self._settings.queue_scan_interval_s
            await self._resend_missing(report)
        return report

    async def _lost_running(self) -> list[job_repo.ActiveJob]:
        # A lease is taken right after the claim; give that moment before calling it lost.
        async with self._sessions() as session:
            running = await job_repo.active_jobs(
                session, JobStatus.RUNNING, older_than_s=self._settings.lease_ttl_s
            )
        if not running:
            return []
        leases = await self._redis.mget([lease_key(str(job.id)) for job in running])
        return [
            job
            for job, lease in zip(running, leases, strict=True)
            if lease is None or not _as_str(lease).startswith(f"{job.attempts}:")
        ]

    async def _recover(self, job: job_repo.ActiveJob, report: PassReport) -> None:
        job_id = str(job.id)
        if job.attempts >= self._settings.max_attempts:
            error = {
                "code": "worker_lost",
                "message": f"The worker running this job was lost {job.attempts} times.",
            }
            async with self._sessions() as session:
                if not await job_repo.fail_lost_job(session, job.id, job.attempts, error):
                    return
            report.failed.append(job_id)
            await asyncio.to_thread(self._announce_failure, job, error)
            return
        async with self._sessions() as session:
            if not await job_repo.requeue_lost_job(session, job.id, job.attempts):
                return
        report.requeued.append(job_id)
        fence_out = self._redis.register_script(_FENCE_OUT)
        keys = [attempt_key(job_id), lease_key(job_id)]
        await fence_out(keys=keys, args=[job.attempts + 1, self._settings.event_log_ttl_s])
        await self._send(job)

    def _announce_failure(self, job: job_repo.ActiveJob, error: dict[str, str]) -> None:
        """The final `error` event, written as a fenced attempt of its own."""
        announce_final(
            self._sync_redis, str(job.id), attempts=job.attempts, max_tokens=job.max_tokens,
            owner="reconciler", log_ttl_s=self._settings.event_log_ttl_s,
            lease_ttl_s=self._settings.lease_ttl_s, event_type="error", error=error,
            usage=None, timings=None,
        )  # fmt: skip

    async def _resend_missing(self, report: PassReport) -> None:
        async with self._sessions() as session:
            queued = await job_repo.active_jobs(
                session, JobStatus.QUEUED, older_than_s=_QUEUED_GRACE_S
            )
        if not queued:
            return
        queues = {j.queue or queue_name(j.engine, j.model) for j in queued}  # its routed pool
        present = await self._tasks_in_broker(queues)
        for job in queued:
            if str(job.id) not in present:
                await self._send(job)
                report.resent.append(str(job.id))

    async def _tasks_in_broker(self, queues: set[str]) -> set[str]:
        """Task ids waiting in these queues or recently delivered to a live worker."""
        ids: set[str] = set()
        for queue in queues:
            for raw in await self._broker.lrange(queue, 0, -1):
                ids.add(_task_id(json.loads(raw)))
        recent = await self._broker.zrangebyscore(
            BROKER_UNACKED_INDEX_KEY, time.time() - _STALE_DELIVERY_S, "+inf"
        )
        if recent:
            delivered = await self._broker.hmget(BROKER_UNACKED_KEY, [_as_str(r) for r in recent])
            ids.update(_task_id(json.loads(raw)[0]) for raw in delivered if raw is not None)
        return ids

    async def _send(self, job: job_repo.ActiveJob) -> None:
        await send_job(self._celery, job)  # with the trace context, as the first send had


def _task_id(message: dict[str, object]) -> str:
    headers = message.get("headers")
    return str(headers.get("id", "")) if isinstance(headers, dict) else ""


def _as_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
