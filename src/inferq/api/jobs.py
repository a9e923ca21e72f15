"""REST jobs: submit, poll, list, cancel, and stream events."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service, prefer_wait
from inferq.api.deps import SessionDep, StateDep
from inferq.api.idempotency import IdempotentRequest
from inferq.api.pagination import decode_cursor, encode_cursor
from inferq.api.schemas import JobAccepted, JobCreate, JobLinks, JobList, JobView
from inferq.api.sse import SSE_HEADERS, finished_frames, job_event_stream, with_keepalive
from inferq.api.state import AppState
from inferq.auth.principal import current_tenant_id
from inferq.cache.service import HEADER as CACHE_HEADER
from inferq.cache.service import cache_header
from inferq.db import jobs as job_repo
from inferq.db.models import Job, JobStatus
from inferq.errors import InvalidRequest

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _links(request: Request, job_id: str) -> JobLinks:
    base = str(request.base_url).rstrip("/")
    return JobLinks(
        self=f"{base}/v1/jobs/{job_id}",
        events=f"{base}/v1/jobs/{job_id}/events",
        cancel=f"{base}/v1/jobs/{job_id}/cancel",
    )


def _view(request: Request, job: Job, output: str | None) -> JobView:
    return JobView(
        id=str(job.id),
        status=job.status,
        model=job.model,
        engine=job.engine,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=_links(request, str(job.id)),
        output=output,
        finish_reason=job.finish_reason,
        usage=job.usage,
        timings=job.timings,
        error=job.error,
        attempts=job.attempts,
        worker=job.worker,
        params=job.params,
        cache=job.cache,
        model_version=job.model_version,
        route=job.route,
    )


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses={
        200: {"model": JobView, "description": "With `Prefer: wait`: the job ended in time."}
    },
)
async def submit(
    body: JobCreate,
    request: Request,
    response: Response,
    state: StateDep,
    session: SessionDep,
    prefer: Annotated[
        str | None,
        Header(
            description="`wait=N` (1 to 60 s): the whole job, 200 if it ended by then, else "
            "202 with the job as it stands."
        ),
    ] = None,
) -> JobAccepted | Response:
    """Queue a job (202), or answer it from the cache; with `Prefer: wait`, the whole job."""
    wait_s = prefer_wait.wait_seconds(prefer)
    options = job_service.SubmitOptions(cache_control=request.headers.get("cache-control"))
    key = request.headers.get("idempotency-key")
    if key is None:
        job = await job_service.submit_job(state, session, body, options=options)
    else:
        job = await _submit_once(state, session, body, options, key, response)
    links = _links(request, str(job.id))
    response.headers["Location"] = links.self
    response.headers[CACHE_HEADER] = cache_header(job)
    if wait_s is not None:
        return await _waited(request, state, session, job, wait_s, response)
    return JobAccepted(
        id=str(job.id), status=job.status, model=job.model, created_at=job.created_at, links=links
    )


async def _waited(
    request: Request,
    state: AppState,
    session: AsyncSession,
    job: Job,
    wait_s: int,
    response: Response,
) -> Response:
    """The job's whole record once it has ended (200), or as it stands after `wait_s` (202)."""
    if cache_header(job) != "miss":
        output = job.output  # answered from the cache at submit, which settled its charge
    else:
        job = await prefer_wait.after_wait(request, state, session, job, wait_s)
        try:
            output = await job_service.live_output(state, job)
        except RedisError:  # the running text is in Redis; the client must still get its id
            output = job.output
    view = _view(request, job, output)
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    headers["Preference-Applied"] = f"wait={wait_s}"
    status = 200 if JobStatus(job.status).is_final else 202
    return Response(
        view.model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


async def _submit_once(
    state: AppState,
    session: AsyncSession,
    body: JobCreate,
    options: job_service.SubmitOptions,
    key: str,
    response: Response,
) -> Job:
    """The job of the first request with this Idempotency-Key and body, or a new one."""
    data = body.model_dump(mode="json", exclude_unset=True)
    idempotent = IdempotentRequest(state, "/v1/jobs", key, data, results=False)
    replay = await idempotent.begin()
    if replay is not None:
        response.headers["x-inferq-idempotent-replay"] = "true"
        return await job_service.load_job(session, replay[0])
    options = dataclasses.replace(options, idempotency_key=key)

    async def one() -> list[Job]:
        return [await job_service.submit_job(state, session, body, options=options)]

    return (await idempotent.create(one()))[0]


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request,
    state: StateDep,
    session: SessionDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobList:
    jobs = await job_repo.list_jobs(
        session,
        status=status,
        limit=limit + 1,
        before=decode_cursor(cursor) if cursor else None,
        tenant_id=current_tenant_id(),
    )
    page, more = jobs[:limit], len(jobs) > limit
    views = [_view(request, job, job.output) for job in page]
    return JobList(
        data=views, next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more else None
    )


@router.get("/{job_id}", response_model=JobView)
async def get_job(
    job_id: str,
    request: Request,
    response: Response,
    state: StateDep,
    session: SessionDep,
    prefer: Annotated[
        str | None, Header(description="`wait=N` (1 to 60 s): answer once the job has ended.")
    ] = None,
) -> JobView:
    """The job; with `Prefer: wait=N`, once it has ended or N seconds have passed (a long poll)."""
    wait_s = prefer_wait.wait_seconds(prefer)
    job = await job_service.load_job(session, job_id)
    if wait_s is not None:
        job = await prefer_wait.after_wait(request, state, session, job, wait_s)
        response.headers["Preference-Applied"] = f"wait={wait_s}"
    return _view(request, job, await job_service.live_output(state, job))


@router.post("/{job_id}/cancel", response_model=JobView)
async def cancel(job_id: str, request: Request, state: StateDep, session: SessionDep) -> JobView:
    job = await job_service.cancel_job(state, session, job_id)
    return _view(request, job, await job_service.live_output(state, job))


@router.get("/{job_id}/events")
async def events(
    job_id: str,
    state: StateDep,
    session: SessionDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    job = await job_service.load_job(session, job_id)
    start = _resume_point(last_event_id)
    # A stream can last for hours: it must not hold a pooled PostgreSQL connection meanwhile.
    await session.close()
    if JobStatus(job.status).is_final:
        # Read before the 200, so that a Redis outage is a 503 here too. One body: a cache
        # hit read this way paid for a ping and the keepalive loop's tasks for nothing.
        body = await finished_frames(state.redis, state.hub, job, start)
        return Response(body, media_type="text/event-stream", headers=SSE_HEADERS)
    # Once the 200 is sent, a Redis outage can only break the stream: answer 503 now instead.
    await state.redis.ping()
    return StreamingResponse(
        with_keepalive(job_event_stream(state.redis, state.hub, job, start)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def _resume_point(last_event_id: str | None) -> int:
    if last_event_id is None or last_event_id == "":
        return 0
    if not last_event_id.lstrip("-").isdigit() or int(last_event_id) < -1:
        raise InvalidRequest(
            "Last-Event-ID must be the integer seq of an event.",
            param="Last-Event-ID",
            code="invalid_last_event_id",
        )
    return int(last_event_id) + 1
