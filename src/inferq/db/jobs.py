"""SQL for jobs. Every state change is one conditional UPDATE, so races resolve in PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from inferq.db.models import Job, JobStatus


async def insert_job(session: AsyncSession, job: Job) -> None:
    """Commit a new job, with whatever rows the caller staged in `session` (a chat turn's).

    A job alone in a session that has not begun a transaction, as most submissions are, is
    written by one autocommitted INSERT: one round trip to PostgreSQL, where the unit of
    work's BEGIN, INSERT and COMMIT took three (and twice the CPU). `job` then stays
    transient: a value, not an object of `session`, so set every column it is read for.
    """
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        session.add(job)
        await session.commit()
        return
    values: dict[str, Any] = {}
    for key in _JOB_KEYS:
        value = getattr(job, key)
        if value is None and key in _JOB_DEFAULTS:
            value = _JOB_DEFAULTS[key]  # what the unit of work would have written
            setattr(job, key, value)
        if value is not None:
            values[key] = value
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    await connection.execute(insert(_JOB_TABLE), [values])
    await session.commit()  # ends the session's use of the connection; sends nothing


_JOB_TABLE: Table = Job.__table__  # type: ignore[assignment]
_JOB_KEYS = tuple(column.key for column in _JOB_TABLE.columns)
_JOB_DEFAULTS = {
    column.key: column.default.arg
    for column in _JOB_TABLE.columns
    if isinstance(column.default, ScalarElementColumnDefault)
}


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
