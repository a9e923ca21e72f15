"""The API's PostgreSQL plumbing on the real test database: the idle ping and the job INSERT."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

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


async def _count(db: asyncpg.Connection, ids: list[uuid.UUID]) -> int:
    return int(await db.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])", ids))


def _count_writes(engine: AsyncEngine) -> list[int]:
    """The rows of each job INSERT sent through `engine` from now on, one entry a write."""
    writes: list[int] = []

    def count(conn: object, cursor: object, statement: str, params: object, *_: object) -> None:
        if statement.startswith("INSERT INTO jobs"):
            writes.append(len(params) if isinstance(params, list) else 1)  # type: ignore[arg-type]

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    return writes


async def _insert(sessions: async_sessionmaker[AsyncSession], job: Job) -> None:
    async with sessions() as session:
        await insert_job(session, job)


async def test_rows_arriving_during_a_write_go_together_in_the_next(
    idle_engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection
) -> None:
    writes = _count_writes(idle_engine)
    jobs = [_job() for _ in range(40)]
    await asyncio.gather(*(_insert(sessions, job) for job in jobs))
    assert await _count(db, [job.id for job in jobs]) == 40
    assert sum(writes) == 40 and writes[0] == 1  # the first row went alone, at once
    assert len(writes) < 40 and max(writes) > 1


async def test_a_bad_row_in_a_group_fails_only_its_own_insert(
    sessions: async_sessionmaker[AsyncSession], db: asyncpg.Connection
) -> None:
    taken = _job()
    await _insert(sessions, taken)
    jobs = [_job() for _ in range(10)]
    jobs[5] = _job(id=taken.id, prompt="other")  # a duplicate key, in the middle of a group
    inserts = (_insert(sessions, job) for job in jobs)
    results = await asyncio.gather(*inserts, return_exceptions=True)
    assert [type(r) for r in results] == [type(None)] * 5 + [IntegrityError] + [type(None)] * 4
    others = [j.id for i, j in enumerate(jobs) if i != 5]
    assert await _count(db, others) == 9
    assert await db.fetchval("SELECT prompt FROM jobs WHERE id = $1", taken.id) == "p"


async def test_a_group_refused_by_the_database_fails_at_once_not_row_by_row(
    settings_env: None, db: asyncpg.Connection
) -> None:
    # The table locked elsewhere: every INSERT gives up after lock_timeout, as it would on a
    # database that hangs. The rows that waited behind the first fail with one write.
    engine = create_async_engine(
        get_settings().database_url, connect_args={"server_settings": {"lock_timeout": "300"}}
    )
    writes = _count_writes(engine)
    sessions = make_sessionmaker(engine)
    jobs = [_job() for _ in range(10)]
    try:
        async with db.transaction():
            await db.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            inserts = (_insert(sessions, job) for job in jobs)
            results = await asyncio.gather(*inserts, return_exceptions=True)
    finally:
        await engine.dispose()
    assert all(isinstance(r, DBAPIError) and "lock timeout" in str(r) for r in results)
    assert writes == [1, 9]
    assert await _count(db, [job.id for job in jobs]) == 0
