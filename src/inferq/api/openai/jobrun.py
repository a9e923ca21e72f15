"""Jobs behind a compatible-API request: submit one per choice, read their events, cancel
them when the client leaves. Shared by the OpenAI and Ollama surfaces.

Events are read with `stream_events`, exactly as SSE /v1/jobs/{id}/events reads them, so a
non-streaming answer is the stream read to its end (no polling of PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service
from inferq.api.disconnect import disconnected
from inferq.api.job_events import job_events
from inferq.api.schemas import JobCreate
from inferq.api.state import AppState
from inferq.background import spawn
from inferq.cache.service import answered_events
from inferq.db.models import Job, JobStatus
from inferq.errors import REQUEST_ERROR_CODES, InferqError, InvalidRequest, InvalidValue
from inferq.queue.events import current_attempt_text, is_final

log = logging.getLogger(__name__)

T = TypeVar("T")
# Background cancellations outlive the request that started them; keep them referenced.
_background: set[asyncio.Task[None]] = set()


class JobCancelled(InferqError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "job_cancelled"


class JobFailed(InferqError):
    status_code = 500
    error_type = "server_error"
    code = "engine_error"


@dataclass
class ChoiceResult:
    """One job's outcome, as read from its event stream."""

    index: int
    events: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return current_attempt_text(self.events)


async def submit_choices(
    state: AppState,
    session: AsyncSession,
    body: JobCreate,
    n: int,
    options: job_service.SubmitOptions,
) -> list[Job]:
    """One job per choice; n > 1 gives sibling jobs sharing a group id, each seeded apart."""
    jobs: list[Job] = []
    try:
        if n == 1:
            return [await job_service.submit_job(state, session, body, options=options)]
        ids = [uuid.uuid4() for _ in range(n)]
        await job_service.claim_request_id(state, session, ids)
        group = dataclasses.replace(options, group_id=uuid.uuid4(), request_id_claimed=True)
        for index, job_id in enumerate(ids):
            seed = None if body.seed is None else (body.seed + index) % 2**32
            choice = body.model_copy(update={"seed": seed})
            sibling = dataclasses.replace(group, choice_index=index)
            jobs.append(
                await job_service.submit_job(state, session, choice, job_id=job_id, options=sibling)
            )
    except Exception as exc:
        if jobs:  # all or nothing: a request refused at a later choice (a rate limit, a full
            # queue) must not leave its first choices running, unseen, on the tenant's limits
            await _cancel(state, [str(job.id) for job in jobs])
        if isinstance(exc, InvalidValue):  # REST's 422 for a value out of range: 400 here
            raise InvalidRequest(exc.message, param=exc.param, code=exc.code) from None
        raise
    return jobs


async def merged_events(
    state: AppState, jobs: list[Job]
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """(choice index, event) of all jobs, interleaved as they come, until each has ended."""
    if len(jobs) == 1:
        async for event in job_events(state.redis, state.hub, jobs[0]):
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, dict[str, Any] | Exception]] = asyncio.Queue()

    async def pump(index: int, job: Job) -> None:
        try:
            async for event in job_events(state.redis, state.hub, job):
                await queue.put((index, event))
        except Exception as exc:  # raised to the reader, as with one job
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    try:
        ended = 0
        while ended < len(jobs):
            index, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            ended += is_final(item)
            yield index, item
    finally:
        for task in tasks:
            task.cancel()


async def collect(state: AppState, jobs: list[Job]) -> list[ChoiceResult]:
    """Read every job's stream to its end; raise for a failed or cancelled job."""
    results = [ChoiceResult(index=i) for i in range(len(jobs))]
    async for index, event in merged_events(state, jobs):
        result = results[index]
        if is_final(event):
            raise_for_outcome(jobs[index], event)
            result.end = event
        else:
            result.events.append(event)
    return results


def raise_for_outcome(job: Job, event: dict[str, Any]) -> None:
    """Turn a final event that is not a normal end into the error a client should see."""
    if event["type"] == "error":
        error = event.get("error") or {}
        failure = JobFailed(
            f"Job {job.id} failed: {error.get('message', 'unknown error')}",
            code=error.get("code", "engine_error"),
        )
        if failure.code in REQUEST_ERROR_CODES:
            failure.status_code, failure.error_type = 400, "invalid_request_error"
        raise failure
    if event.get("finish_reason") == "cancelled":
        raise JobCancelled(f"Job {job.id} was cancelled before it finished.")


def cancel_in_background(state: AppState, jobs: list[Job]) -> None:
    """The client left: cancel its unfinished jobs, if the settings say so."""
    # A cache hit was complete before its first frame: nothing to stop, no row to read.
    unfinished = [str(j.id) for j in jobs if not JobStatus(j.status).is_final]
    if not state.settings.cancel_on_disconnect or not unfinished:
        return
    spawn(_background, _cancel(state, unfinished))


async def _cancel(state: AppState, job_ids: list[str]) -> None:
    async with state.sessions() as session:
        for job_id in job_ids:
            try:
                job = await job_service.cancel_job(state, session, job_id)
            except Exception:
                log.exception("cancel after disconnect failed", extra={"job": job_id})
                continue
            log.info("client left, job cancelled", extra={"job": job_id, "status": job.status})


async def guard_stream(
    state: AppState, jobs: list[Job], frames: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """Relay frames; if the client goes before the last one, cancel the jobs."""
    finished = False
    try:
        async for frame in frames:
            yield frame
        finished = True
    finally:
        if not finished:
            cancel_in_background(state, jobs)


async def unless_disconnected(
    request: Request, jobs: list[Job], state: AppState, work: Awaitable[T]
) -> T | None:
    """Await `work`; None (and the jobs cancelled) if the client disconnects first.

    Cache hits this process answered have nothing left to wait for or to cancel: `work` is
    then awaited alone, without the watch's two tasks and its `asyncio.wait`.
    """
    if all(answered_events(job) is not None for job in jobs):
        return await work
    waiting = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({waiting, watching}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        waiting.cancel()  # this request itself was cancelled (server shutdown)
        raise
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    cancel_in_background(state, jobs)
    return None
