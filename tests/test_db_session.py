"""The API's PostgreSQL plumbing on the real test database: the idle ping and the job INSERT."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from inferq.db.jobs import insert_job
from inferq.db.models import Job
from inferq.db.session import make_engine, make_sessionmaker
from inferq.settings import Settings, get_settings


def _job(**values: object) -> Job:
    fields: dict[str, object] = dict(
        id=uuid.uuid4(), created_at=datetime.now(UTC), model="echo", engine="echo",
        params={"max_tokens": 1}, prompt="p", prompt_tokens=1,
    )  # fmt: skip
    fields.update(values)
    return Job(**fields)


def _engine(idle_s: float) -> AsyncEngine:
    url = get_settings().database_url
    return make_engine(
        Settings(database_url=url, database_pool_size=1, database_ping_idle_s=idle_s)
    )


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(db: asyncpg.Connection, pid: int) -> None:
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(100):  # the backend is gone once it leaves pg_stat_activity
        if not await db.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.02)


@pytest.fixture
async def idle_engine(settings_env: None) -> AsyncIterator[AsyncEngine]:
    engine = _engine(idle_s=0.2)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(idle_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(idle_engine)


async def test_a_connection_idle_past_the_limit_is_pinged_and_replaced(
    idle_engine: AsyncEngine, db: asyncpg.Connection
) -> None:
    pid = await _backend_pid(idle_engine)
    await _terminate(db, pid)  # as a PostgreSQL restart would, while the pool sat idle
    await asyncio.sleep(0.3)
    assert await _backend_pid(idle_engine) != pid  # no error: the ping found it dead


async def test_a_connection_in_steady_use_is_not_pinged(
    settings_env: None, db: asyncpg.Connection
) -> None:
    """Without the ping, a dead connection fails its first statement (asyncpg's error
    depends on timing) and the pool is invalidated, so the next checkout connects afresh."""
    engine = _engine(idle_s=60)
    try:
        pid = await _backend_pid(engine)
        await _terminate(db, pid)
        with pytest.raises(DBAPIError):
            await _backend_pid(engine)  # used within the last 60 s: not pinged
        assert await _backend_pid(engine) != pid
    finally:
        await engine.dispose()


async def test_a_lone_job_is_inserted_with_its_column_defaults(
    sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection
) -> None:
    job = _job()
    async with sessions() as session:
        await insert_job(session, job)
        assert job not in session  # written by the single INSERT, not the unit of work
    row = await db.fetchrow(
        "SELECT status, attempts, prompt_truncated FROM jobs WHERE id = $1", job.id
    )
    assert row is not None and dict(row) == {
        "status": "queued", "attempts": 0, "prompt_truncated": False
    }  # fmt: skip
    assert (job.status, job.attempts, job.prompt_truncated) == ("queued", 0, False)


async def test_a_job_commits_with_the_rows_staged_beside_it(
    sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection
) -> None:
    first, second = _job(), _job()
    async with sessions() as session:
        session.add(first)  # as a chat turn stages its messages
        await insert_job(session, second)
    found = await db.fetch("SELECT id FROM jobs WHERE id = ANY($1::uuid[])", [first.id, second.id])
    assert {r["id"] for r in found} == {first.id, second.id}


async def test_a_failed_insert_writes_nothing_and_leaves_the_session_usable(
    sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection
) -> None:
    job = _job()
    async with sessions() as session:
        await insert_job(session, job)
        with pytest.raises(IntegrityError, match="duplicate key"):
            await insert_job(session, _job(id=job.id, prompt="other"))
        await session.rollback()
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    assert await db.fetchval("SELECT prompt FROM jobs WHERE id = $1", job.id) == "p"
