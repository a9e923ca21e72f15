"""The per-pool circuit breaker against real Redis: the rules, the probe, the reset.

The end-to-end walk against a worker that fails on purpose is in test_registry_system.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.dialects import postgresql

from inferq.db.models import Job
from inferq.db.session import make_engine, make_sessionmaker
from inferq.metrics import BREAKER_STATE
from inferq.queue.names import BREAKER_CURSOR_KEY, breaker_seen_key
from inferq.registry.breaker import CLOSED, HALF_OPEN, OPEN, Breakers
from inferq.registry.outcomes import BreakerWatcher, outcomes_since
from inferq.settings import get_settings
from tests.conftest import _pg_dsn

COOLDOWN_S = 0.3


@pytest.fixture
async def breakers() -> AsyncIterator[Breakers]:
    settings = get_settings().model_copy(
        update={"breaker_failures": 3, "breaker_cooldown_s": COOLDOWN_S,
                "breaker_min_requests": 10, "breaker_error_rate": 0.5}
    )  # fmt: skip
    client = aioredis.Redis.from_url(settings.redis_url)
    yield Breakers(settings, client)
    await client.aclose()


def _pool() -> str:
    return f"inferq.echo.test-{uuid.uuid4().hex[:8]}"


def _job() -> str:
    return str(uuid.uuid4())


def _gauge(pool: str) -> float:
    return BREAKER_STATE.labels(pool)._value.get()  # type: ignore[no-any-return]


async def test_consecutive_failures_open_then_one_probe_closes(breakers: Breakers) -> None:
    pool = _pool()
    assert (await breakers.admit(pool, _job())).allowed
    assert await breakers.record(pool, _job(), ok=False) == CLOSED
    assert await breakers.record(pool, _job(), ok=True) == CLOSED  # a success resets the run
    for _ in range(2):
        assert await breakers.record(pool, _job(), ok=False) == CLOSED
    assert await breakers.record(pool, _job(), ok=False) == OPEN
    assert _gauge(pool) == 2
    refused = await breakers.admit(pool, _job())
    assert not refused.allowed and refused.state == OPEN
    assert 0 < refused.retry_after_s <= COOLDOWN_S
    await asyncio.sleep(COOLDOWN_S + 0.05)
    probe_id = _job()
    probe = await breakers.admit(pool, probe_id)
    assert probe.allowed and probe.probe and probe.state == HALF_OPEN
    assert _gauge(pool) == 1
    assert not (await breakers.admit(pool, _job())).allowed  # one probe at a time
    assert await breakers.record(pool, _job(), ok=True) == HALF_OPEN  # not the probe
    assert await breakers.record(pool, probe_id, ok=True) == CLOSED
    assert (await breakers.admit(pool, _job())).allowed
    assert _gauge(pool) == 0


async def test_a_failed_probe_opens_again(breakers: Breakers) -> None:
    pool = _pool()
    for _ in range(3):
        await breakers.record(pool, _job(), ok=False)
    await asyncio.sleep(COOLDOWN_S + 0.05)
    probe_id = _job()
    assert (await breakers.admit(pool, probe_id)).probe
    assert await breakers.record(pool, probe_id, ok=False) == OPEN
    view = await breakers.describe(pool)
    assert view["state"] == OPEN and view["reason"] == "probe_failed"
    assert view["times_opened"] == 2


async def test_error_rate_over_the_window_opens(breakers: Breakers) -> None:
    pool = _pool()
    # Alternating outcomes never make 3 failures in a row, but half of them fail.
    states = [await breakers.record(pool, _job(), ok=i % 2 == 0) for i in range(10)]
    assert states[:-1] == [CLOSED] * 9
    assert states[-1] == OPEN
    assert (await breakers.describe(pool))["reason"] == "error_rate"


async def test_reset_closes_and_lists(breakers: Breakers) -> None:
    pool = _pool()
    for _ in range(3):
        await breakers.record(pool, _job(), ok=False)
    assert pool in {b["pool"] for b in await breakers.all()}
    assert await breakers.reset(pool)
    assert (await breakers.describe(pool))["state"] == CLOSED
    assert (await breakers.admit(pool, _job())).allowed


async def test_failures_the_request_caused_do_not_count() -> None:
    """Five jobs whose grammar llama.cpp refused opened the pool's breaker: every tenant then
    got 503 for a model whose workers were healthy."""
    settings = get_settings()  # the rules of the test API's own watcher, which may count first
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    breakers = Breakers(settings, client)
    watcher = BreakerWatcher(settings, client, make_sessionmaker(engine), breakers)
    pool = _pool()

    async def fail(code: str) -> None:
        async with make_sessionmaker(engine)() as session:
            for _ in range(settings.breaker_failures):
                job = Job(
                    id=uuid.uuid4(), created_at=datetime.now(UTC), model="echo", engine="echo",
                    params={"max_tokens": 1}, prompt="p", prompt_tokens=1, queue=pool,
                    status="failed", error={"code": code, "message": "m"},
                    finished_at=datetime.now(UTC),
                )  # fmt: skip
                session.add(job)
            await session.commit()
        await watcher.tick()

    try:
        await client.delete(BREAKER_CURSOR_KEY)  # read from now: not every earlier test's jobs
        await fail("invalid_grammar")
        assert (await breakers.admit(pool, _job())).allowed
        await fail("engine_error")
        assert not (await breakers.admit(pool, _job())).allowed
    finally:
        await breakers.reset(pool)
        await client.aclose()
        await engine.dispose()


async def test_the_watchers_read_skips_the_cache_hits_by_its_index(settings_env: None) -> None:
    """By ix_jobs_finished_at the read held every cache hit since the last queued job ended
    (18,014 rows, 14 ms, twice a second on the bench database): it must be able to use the
    partial index of queued jobs. Seq scans are off because the tests' table is small."""
    settings = get_settings()
    engine = make_engine(settings)
    query = outcomes_since(datetime.now(UTC)).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SET enable_seqscan = off")
            plan = (await connection.exec_driver_sql(f"EXPLAIN {query}")).scalars().all()
    finally:
        await engine.dispose()
    assert any("ix_jobs_queue_finished_at" in line for line in plan), plan


async def test_a_burst_past_one_page_is_all_counted_and_rereads_cost_no_redis_trip(
    settings_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,200 queued jobs ending within the overlap (1,000 idle jobs cancelled at once is one
    such burst) used to hold the cursor at the 1,000th: the rest were never counted."""
    settings = get_settings()
    engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    breakers = Breakers(settings, client)
    watcher = BreakerWatcher(settings, client, make_sessionmaker(engine), breakers)
    pool, now = _pool(), datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(1200)]
    conn = await asyncpg.connect(_pg_dsn())
    try:
        await conn.executemany(
            "INSERT INTO jobs (id, model, engine, status, params, prompt, prompt_tokens, "
            "attempts, created_at, finished_at, queue) "
            "VALUES ($1, 'echo', 'echo', 'completed', '{}', 'p', 1, 1, $2, $2, $3)",
            [(job_id, now, pool) for job_id in ids],
        )  # one finished_at for all: the keyset's id breaks the tie
        await client.delete(BREAKER_CURSOR_KEY)
        await watcher.tick()
        seen = await client.exists(*(breaker_seen_key(str(job_id)) for job_id in ids))
        assert seen == len(ids)  # counted by this watcher or by the test API's own
        burst = {breaker_seen_key(str(job_id)) for job_id in ids}
        asked: list[str] = []
        real_set = client.set

        async def counting_set(name: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(name)
            return await real_set(name, *args, **kwargs)

        monkeypatch.setattr(client, "set", counting_set)
        await watcher.tick()  # re-reads the burst: it is inside the overlap
        assert asked and not burst & set(asked)  # the cursor was set; no burst row was asked
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = $1", pool)
        await conn.close()
        await breakers.reset(pool)
        await client.aclose()
        await engine.dispose()
