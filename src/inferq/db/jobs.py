"""SQL for jobs. Every state change is one conditional UPDATE, so races resolve in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.db.models import Job, JobStatus


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id, populate_existing=True)


async def list_jobs(
    session: AsyncSession,
    *,
    status: JobStatus | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[Job]:
    """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
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
