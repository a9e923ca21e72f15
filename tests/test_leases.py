"""Fencing, leases and the reconciler, against the real test Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from inferq.db.session import make_engine, make_sessionmaker
from inferq.queue.celery_app import make_celery
from inferq.queue.events import attempt_seq_floor
from inferq.queue.hub import EventHub
from inferq.queue.names import (
    RECONCILER_LOCK_KEY,
    attempt_key,
    event_log_key,
    lease_key,
    queue_name,
)
from inferq.queue.publisher import AttemptLost, EventPublisher
from inferq.queue.reconciler import Reconciler
from inferq.queue.stream import read_log, stream_events
from inferq.settings import get_settings
from inferq.workers.lease import LeaseKeeper

_HOLDER = "tests-hold-the-reconciler-lock"
# A queue no worker of the test stack consumes, so tasks the reconciler sends stay visible.
ENGINE, MODEL = "nobody", "echo"


@pytest.fixture
def sync_redis(settings_env: None) -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url)


def publisher(client: redis.Redis, job_id: str, attempt: int) -> EventPublisher:
    return EventPublisher(client, job_id, 60, attempt=attempt, retry_s=1.0)


def seqs(client: redis.Redis, job_id: str) -> list[tuple[int, str]]:
    return [
        (e["seq"], e["type"]) for e in map(json.loads, client.lrange(event_log_key(job_id), 0, -1))
    ]


def test_a_superseded_attempt_cannot_append(sync_redis: redis.Redis) -> None:
    job_id = str(uuid.uuid4())
    first = publisher(sync_redis, job_id, 1)
    assert first.begin("w1", 5, seq_floor=0) == 0
    first.emit("token", text="a")
    first.emit("token", text="b")
    second = publisher(sync_redis, job_id, 2)
    assert second.begin("w2", 5, seq_floor=attempt_seq_floor(2, 10)) == 2, "continues the log"
    second.emit("restart", attempt=2)
    with pytest.raises(AttemptLost):
        first.emit("token", text="late")
    with pytest.raises(AttemptLost):
        publisher(sync_redis, job_id, 1).begin("w1", 5, seq_floor=0)
    second.emit("end", finish_reason="stop")
    assert seqs(sync_redis, job_id) == [(0, "token"), (1, "token"), (2, "restart"), (3, "end")]
    assert sync_redis.get(lease_key(job_id)) == b"2:w2"


def test_a_retried_emit_is_not_appended_twice(sync_redis: redis.Redis) -> None:
    job_id = str(uuid.uuid4())
    pub = publisher(sync_redis, job_id, 1)
    pub.begin("w", 5, seq_floor=0)
    pub.emit("token", text="a")
    pub.seq -= 1  # as if the reply to the first try had been lost
    pub.emit("token", text="a")
    assert seqs(sync_redis, job_id) == [(0, "token")]


async def test_after_redis_lost_the_log_the_next_attempt_starts_above_every_old_seq(
    sync_redis: redis.Redis,
) -> None:
    job_id = str(uuid.uuid4())
    first = publisher(sync_redis, job_id, 1)
    first.begin("w1", 5, seq_floor=0)
    for _ in range(3):
        first.emit("token", text="x")
    sync_redis.delete(event_log_key(job_id), attempt_key(job_id), lease_key(job_id))  # "restart"
    with pytest.raises(AttemptLost):
        first.emit("token", text="x")  # the fence is gone: the old attempt stops
    floor = attempt_seq_floor(2, 10)
    second = publisher(sync_redis, job_id, 2)
    assert second.begin("w2", 5, seq_floor=floor) == floor == 13
    second.emit("restart", attempt=2)
    second.emit("token", text="y")
    second.emit("end", finish_reason="stop")
    client = aioredis.Redis.from_url(get_settings().redis_url)
    hub = EventHub(client)
    await hub.start()
    try:
        assert [e["seq"] for e in await read_log(client, job_id, 14)] == [14, 15]
        # A reader that had seen seq 0..2 resumes at 3 and is carried to the restart.
        events = [e async for e in stream_events(client, hub, job_id, 3)]
    finally:
        await hub.stop()
        await client.aclose()
    assert [(e["seq"], e["type"]) for e in events] == [(13, "restart"), (14, "token"), (15, "end")]


def test_a_lease_stops_renewing_once_its_attempt_is_fenced_out(sync_redis: redis.Redis) -> None:
    job_id = str(uuid.uuid4())
    publisher(sync_redis, job_id, 1).begin("w", 5, seq_floor=0)
    keeper = LeaseKeeper(sync_redis, ttl_s=5, renew_s=60, fence_ttl_s=60)
    try:
        lease = keeper.hold(job_id, 1)
        keeper.renew_all()
        assert not lease.is_lost and sync_redis.pttl(lease_key(job_id)) > 4000
        publisher(sync_redis, job_id, 2).begin("w2", 5, seq_floor=0)
        keeper.renew_all()
        assert lease.is_lost
        keeper.release(lease)
        assert sync_redis.get(lease_key(job_id)) == b"2:w2", "never drops another attempt's lease"
    finally:
        keeper.stop()


@pytest.fixture
async def reconciler(settings_env: None) -> AsyncIterator[Reconciler]:
    settings = get_settings().model_copy(update={"max_attempts": 2})
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    reconciler = Reconciler(settings, client, make_sessionmaker(engine), make_celery(settings))
    # The stack's API processes run reconcilers too, and one could requeue a row before the
    # test's pass sees it. They act only while they hold this lock: hold it, and let a pass
    # already under way end.
    await client.set(RECONCILER_LOCK_KEY, _HOLDER, px=60_000)
    await asyncio.sleep(settings.reconcile_interval_s + 0.5)
    yield reconciler
    await reconciler.stop()
    if await client.get(RECONCILER_LOCK_KEY) == _HOLDER.encode():
        await client.delete(RECONCILER_LOCK_KEY)
    await client.aclose()
    await engine.dispose()


async def _insert(db: asyncpg.Connection, status: str, attempts: int, age_s: float) -> str:
    job_id = str(uuid.uuid4())
    at = datetime.now(UTC) - timedelta(seconds=age_s)
    await db.execute(
        "INSERT INTO jobs (id, model, engine, status, params, prompt, prompt_tokens, attempts,"
        " created_at, started_at) VALUES ($1::uuid, $2, $3, $4, $5::jsonb, 'p', 1, $6, $7, $8)",
        job_id,
        MODEL,
        ENGINE,
        status,
        json.dumps({"max_tokens": 10}),
        attempts,
        at,
        at if status == "running" else None,
    )
    return job_id


def _queued_task_ids(client: redis.Redis) -> list[str]:
    raw = client.lrange(queue_name(ENGINE, MODEL), 0, -1)
    return [json.loads(m)["headers"]["id"] for m in raw]


async def test_reconciler_requeues_a_running_job_without_lease_and_spares_a_leased_one(
    reconciler: Reconciler, db: asyncpg.Connection, sync_redis: redis.Redis
) -> None:
    lost = await _insert(db, "running", 1, age_s=60)
    alive = await _insert(db, "running", 1, age_s=60)
    fresh = await _insert(db, "running", 1, age_s=0)  # just claimed: its lease may be coming
    sync_redis.set(lease_key(alive), "1:w", px=5000)
    publisher(sync_redis, lost, 1).begin("dead", 5, seq_floor=0)
    sync_redis.delete(lease_key(lost))
    report = await reconciler.reconcile_once(scan_queued=False)
    assert lost in report.requeued and alive not in report.requeued
    assert fresh not in report.requeued
    row = await db.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1::uuid", lost)
    assert (row["status"], row["attempts"]) == ("queued", 1)
    assert sync_redis.get(attempt_key(lost)) == b"2", "the lost attempt is fenced out"
    assert lost in _queued_task_ids(sync_redis)


async def test_reconciler_fails_a_job_after_max_attempts_with_worker_lost(
    reconciler: Reconciler, db: asyncpg.Connection, sync_redis: redis.Redis
) -> None:
    job_id = await _insert(db, "running", 2, age_s=60)
    report = await reconciler.reconcile_once(scan_queued=False)
    assert job_id in report.failed
    row = await db.fetchrow("SELECT status, error FROM jobs WHERE id = $1::uuid", job_id)
    assert row["status"] == "failed" and json.loads(row["error"])["code"] == "worker_lost"
    async with asyncio.timeout(5):  # the error event is written from a thread
        while not sync_redis.exists(event_log_key(job_id)):
            await asyncio.sleep(0.02)
    (event,) = map(json.loads, sync_redis.lrange(event_log_key(job_id), 0, -1))
    assert event["type"] == "error" and event["error"]["code"] == "worker_lost"
    assert event["seq"] == attempt_seq_floor(3, 10)


async def test_reconciler_resends_queued_jobs_missing_from_the_broker_only(
    reconciler: Reconciler, db: asyncpg.Connection, sync_redis: redis.Redis
) -> None:
    sync_redis.delete(queue_name(ENGINE, MODEL))
    missing = await _insert(db, "queued", 0, age_s=30)
    young = await _insert(db, "queued", 0, age_s=0)
    report = await reconciler.reconcile_once(scan_queued=True)
    assert missing in report.resent and young not in report.resent
    again = await reconciler.reconcile_once(scan_queued=True)
    assert missing not in again.resent, "its task is in the broker now"
    assert _queued_task_ids(sync_redis).count(missing) == 1
