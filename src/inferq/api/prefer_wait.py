"""`Prefer: wait=N` (RFC 7240) on `POST /v1/jobs` and `GET /v1/jobs/{id}`.

On the submit, a job that ends within N seconds (a cache hit ends before it is answered) comes
back as its whole record with 200, so a script needs one request where a submit and a poll or
an event stream took two; one that does not comes back as it stands with 202. On the poll it
is a long poll: the job once it has ended, or as it stands after N seconds. Replicate's
predictions API offers the same header on its submit, with the same 60 s bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service
from inferq.api.disconnect import disconnected
from inferq.api.job_events import job_events
from inferq.api.state import AppState
from inferq.db.models import Job, JobStatus
from inferq.errors import InvalidRequest

MAX_WAIT_S = 60

log = logging.getLogger(__name__)


def wait_seconds(prefer: str | None) -> int | None:
    """The `wait` of a Prefer header, in seconds; `wait` alone is the longest; None without it.

    Other preferences are ignored, as RFC 7240 asks; a `wait` this API cannot honour is a
    400, read before anything is submitted.
    """
    for preference in (prefer or "").split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not value:
            return MAX_WAIT_S
        if not (value.isascii() and value.isdigit() and len(value) <= 2) or not (
            1 <= int(value) <= MAX_WAIT_S
        ):
            raise InvalidRequest(
                f"Prefer: wait takes whole seconds from 1 to {MAX_WAIT_S}, not {value[:20]!r}.",
                param="Prefer",
                code="invalid_prefer_wait",
            )
        return int(value)
    return None


async def after_wait(
    request: Request, state: AppState, session: AsyncSession, job: Job, seconds: float
) -> Job:
    """`job` as it is once it has ended, `seconds` have passed or the client has gone."""
    if JobStatus(job.status).is_final:
        return job
    await session.close()  # the wait must not hold a pooled PostgreSQL connection
    await _until_final(request, state, job, seconds)
    return await _reloaded(session, job)


async def _until_final(request: Request, state: AppState, job: Job, seconds: float) -> None:
    """Return once `job` has ended, `seconds` have passed or the client has gone.

    The job was accepted before the wait began: nothing here stops it, and a failure to follow
    its events (a Redis outage) ends the wait, not the request, so the client still learns the
    job's id.
    """
    ending = asyncio.ensure_future(_drain(job_events(state.redis, state.hub, job)))
    leaving = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({ending, leaving}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ending, leaving):
            task.cancel()
        followed, _ = await asyncio.gather(ending, leaving, return_exceptions=True)
    if isinstance(followed, Exception):
        extra = {"job": str(job.id)}
        log.warning("Prefer: wait lost the job's events", exc_info=followed, extra=extra)


async def _reloaded(session: AsyncSession, job: Job) -> Job:
    """The job's row as it is now; the submitted job if PostgreSQL cannot say (the client
    then gets the 202 and the id it would have had without the header)."""
    try:
        return await job_service.load_job(session, str(job.id))
    except SQLAlchemyError:
        extra = {"job": str(job.id)}
        log.warning("Prefer: wait could not reread the job", exc_info=True, extra=extra)
        return job


async def _drain(events: AsyncIterator[dict[str, Any]]) -> None:
    async for _ in events:  # job_events stops after the final event
        pass
