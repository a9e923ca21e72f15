"""SQL for jobs. Every state change is one conditional UPDATE, so races resolve in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Table, and_, func, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from inferq.background import spawn
from inferq.db.models import Job, JobStatus


async def insert_job(session: AsyncSession, job: Job) -> None:
    """Commit a new job, with whatever rows the caller staged in `session` (a chat turn's).

    A job alone in a session that has not begun a transaction, as most submissions are, is
    written by one autocommitted INSERT: one round trip to PostgreSQL, where the unit of
    work's BEGIN, INSERT and COMMIT took three (and twice the CPU). It runs on a connection
    of its own from the engine, as one driver-level statement: the session's connection
    handling and the Core statement's parameter processing were a sixth of the row's CPU
    (docs/benchmarks.md, "A load generator lighter than the API"), and SQLAlchemy still
    translates the driver's errors and invalidates a broken connection. Rows that arrive
    while one is being written go together in the next write (`_GroupInsert`). `job` then
    stays transient: a value, not an object of `session`, so set every column it is read for.
    """
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        session.add(job)
        await session.commit()
        return
    if job.created_at is None:
        job.created_at = datetime.now(UTC)  # the column's server default is not used here
    values = []
    for key in _JOB_KEYS:
        value = getattr(job, key)
        if value is None and key in _JOB_DEFAULTS:
            value = _JOB_DEFAULTS[key]  # what the unit of work would have written
            setattr(job, key, value)
        if value is not None and key in _JOB_JSON_KEYS:
            value = json.dumps(value)  # as the dialect's JSONB bind does; the codec takes str
        values.append(value)
    await _group_insert(session).insert(tuple(values))


class _GroupInsert:
    """Lone job rows of one engine, written as a database's group commit writes its log.

    The first row is written at once. Rows that arrive while a write is in flight wait for
    it, then go together in the next: one `executemany`, which asyncpg sends as one round
    trip and runs as one transaction. Under load that spreads a connection's checkout and a
    round trip over many rows; one row alone waits for nothing. A batch refused for a row's
    own fault (a duplicate key, a bad value) is written again row by row, so that error
    reaches its own caller and no other; any other failure (the database down) is every
    row's, at once, rather than once per row.
    """

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._busy = False
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def insert(self, values: tuple[Any, ...]) -> None:
        """Return once the row is committed; raise what its INSERT raised."""
        if self._busy:
            future = asyncio.get_running_loop().create_future()
            self._waiting.append((values, future))
            await future
            return
        self._busy = True
        try:
            await self._write([values])
        finally:
            self._next()

    def _next(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        batch = self._waiting[:_MAX_GROUP]
        del self._waiting[:_MAX_GROUP]
        spawn(self._tasks, self._write_group(batch))

    async def _write_group(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]]) -> None:
        try:
            try:
                await self._write([values for values, _ in batch])
            except (IntegrityError, DataError):  # one row's own fault: find whose
                for values, future in batch:
                    try:
                        await self._write([values])
                    except Exception as exc:
                        _settle(future, exc)
                    else:
                        _settle(future, None)
            except Exception as exc:  # the database's fault (down, timed out): every row's
                for _, future in batch:
                    _settle(future, exc)
            else:
                for _, future in batch:
                    _settle(future, None)
        finally:
            self._next()

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        async with self._engine.connect() as connection:
            await connection.exec_driver_sql(_INSERT_JOB, rows[0] if len(rows) == 1 else rows)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled; the row stands or falls all the same
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _group_insert(session: AsyncSession) -> _GroupInsert:
    """The session's engine's writer, autocommitting; made once per engine."""
    engine = session.bind
    assert isinstance(engine, AsyncEngine), "the API's sessions are bound to its engine"
    writer = _GROUPS.get(engine)
    if writer is None:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        writer = _GROUPS[engine] = _GroupInsert(autocommit)
    return writer


_GROUPS: weakref.WeakKeyDictionary[AsyncEngine, _GroupInsert] = weakref.WeakKeyDictionary()
_MAX_GROUP = 64  # rows a write; the rest wait for the next


_JOB_TABLE: Table = Job.__table__  # type: ignore[assignment]
_JOB_KEYS = tuple(column.key for column in _JOB_TABLE.columns)
_JOB_JSON_KEYS = frozenset(c.key for c in _JOB_TABLE.columns if isinstance(c.type, JSON))
_JOB_DEFAULTS = {
    column.key: column.default.arg
    for column in _JOB_TABLE.columns
    if isinstance(column.default, ScalarElementColumnDefault)
}
# Every column, NULL where the job has none (as the unit of work writes an unset column).
_INSERT_JOB = (
    f"INSERT INTO {_JOB_TABLE.name} ({', '.join(c.name for c in _JOB_TABLE.columns)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_JOB_KEYS) + 1))})"
)


async def get_job(
    session: AsyncSession, job_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> Job | None:
    """The job; with `tenant_id`, None unless it is that tenant's (404, never 403)."""
    job = await session.get(Job, job_id, populate_existing=True)
    if job is not None and tenant_id is not None and job.tenant_id != tenant_id:
        return None
    return job


async def list_jobs(
    session: AsyncSession,
    *,
    status: JobStatus | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
    tenant_id: uuid.UUID | None = None,
) -> list[Job]:
    """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status.value)
    if before is not None:
        created_at, job_id = before
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    return list((await session.scalars(query)).all())


async def claim_job(session: AsyncSession, job_id: uuid.UUID, worker: dict[str, Any]) -> Job | None:
    """Move a queued job to running for this worker; None if it is not queued any more."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            started_at=datetime.now().astimezone(),
            attempts=Job.attempts + 1,
            worker=worker,
        )
        .returning(Job)
    )
    job = (await session.scalars(query)).one_or_none()
    await session.commit()
    return job


async def finish_job(session: AsyncSession, job_id: uuid.UUID, attempt: int, **values: Any) -> bool:
    """Write the final record of a running attempt; False if that attempt was superseded."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.attempts == attempt)
        .values(finished_at=datetime.now().astimezone(), **values)
    )
    result = await session.execute(query)
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def cancel_queued_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """Cancel a job that no worker has claimed; None if it is already past `queued`."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.CANCELLED.value,
            finish_reason="cancelled",
            output="",
            finished_at=datetime.now().astimezone(),
        )
        .returning(Job)
    )
    job = (await session.scalars(query)).one_or_none()
    await session.commit()
    return job


async def fail_queued_job(session: AsyncSession, job_id: uuid.UUID, error: dict[str, str]) -> None:
    """Mark a job that could not be enqueued as failed, so it never looks pending."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.FAILED.value, error=error, finished_at=datetime.now().astimezone())
    )
    await session.execute(query)
    await session.commit()


async def requeue_lost_job(session: AsyncSession, job_id: uuid.UUID, attempt: int) -> bool:
    """Put a running job whose attempt lost its lease back to `queued`; False if it moved on."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.attempts == attempt)
        .values(status=JobStatus.QUEUED.value, worker=None)
    )
    result = await session.execute(query)
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def fail_lost_job(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, error: dict[str, str]
) -> bool:
    """End a job whose last allowed attempt lost its lease; False if it moved on."""
    query = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.attempts == attempt)
        .values(
            status=JobStatus.FAILED.value,
            error=error,
            finish_reason=None,
            finished_at=datetime.now().astimezone(),
        )
    )
    result = await session.execute(query)
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ActiveJob:
    """What the reconciler needs to know of a queued or running job."""

    id: uuid.UUID
    attempts: int
    engine: str
    model: str
    max_tokens: int
    queue: str | None = None  # the pool it was routed to (inferq.registry; migration 0007)


async def active_jobs(
    session: AsyncSession, status: JobStatus, older_than_s: float, limit: int = 10_000
) -> list[ActiveJob]:
    """Jobs in `status` since longer than `older_than_s` (PostgreSQL's clock), oldest first."""
    since = Job.started_at if status == JobStatus.RUNNING else Job.created_at
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s)
    query = (
        select(
            Job.id,
            Job.attempts,
            Job.engine,
            Job.model,
            Job.params["max_tokens"].as_integer(),
            Job.queue,
        )
        .where(Job.status == status.value, or_(since.is_(None), since < cutoff))
        .order_by(Job.created_at)
        .limit(limit)
    )
    rows = (await session.execute(query)).all()
    await session.commit()
    return [ActiveJob(*row) for row in rows]
