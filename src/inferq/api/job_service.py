"""Submitting, reading and cancelling jobs: the logic behind the jobs router."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api.schemas import JobCreate
from inferq.api.state import AppState
from inferq.catalog import ModelSpec, resolve_model
from inferq.db import jobs as job_repo
from inferq.db.models import Job, JobStatus
from inferq.errors import ContextLengthExceeded, InvalidValue, JobNotFound, ServiceUnavailable
from inferq.queue.events import encode_event
from inferq.queue.names import RUN_JOB_TASK, cancel_key, event_channel, event_log_key, queue_name
from inferq.queue.stream import read_log

# Tokenizing a long prompt takes milliseconds; above this size it leaves the event loop.
_INLINE_TOKENIZE_CHARS = 4096
_CANCEL_WAIT_S = 2.0


def parse_job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound(f"No job with id '{raw}'.", param="id") from None


async def submit_job(state: AppState, session: AsyncSession, body: JobCreate) -> Job:
    """Validate against the model, commit the job row, then enqueue its task."""
    spec = resolve_model(state.settings, body.model)
    if body.max_tokens > spec.context_length:
        raise InvalidValue(
            f"max_tokens: must be at most {spec.context_length} for model '{spec.name}'",
            param="max_tokens",
        )
    prompt, prompt_tokens = await _prompt_of(state, spec, body)
    if prompt_tokens + body.max_tokens > spec.context_length:
        raise ContextLengthExceeded(
            f"This model's context is {spec.context_length} tokens; the prompt has "
            f"{prompt_tokens} and max_tokens asks for {body.max_tokens}.",
            param="messages" if body.messages is not None else "prompt",
        )
    job = Job(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        attempts=0,
        model=spec.name,
        engine=spec.engine,
        status=JobStatus.QUEUED.value,
        params=body.sampling(),
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        messages=[m.model_dump() for m in body.messages] if body.messages else None,
    )
    session.add(job)
    await session.commit()
    await _enqueue(state, session, job)
    return job


async def _prompt_of(state: AppState, spec: ModelSpec, body: JobCreate) -> tuple[str, int]:
    tokenizer = await asyncio.to_thread(state.tokenizers.get, spec)
    if body.messages is not None:
        prompt = tokenizer.render_chat([m.model_dump() for m in body.messages])
    else:
        assert body.prompt is not None
        prompt = body.prompt
    if len(prompt) > _INLINE_TOKENIZE_CHARS:
        return prompt, len(await asyncio.to_thread(tokenizer.encode, prompt))
    return prompt, len(tokenizer.encode(prompt))


async def _enqueue(state: AppState, session: AsyncSession, job: Job) -> None:
    def send() -> None:
        state.celery.send_task(
            RUN_JOB_TASK,
            args=[str(job.id)],
            task_id=str(job.id),
            queue=queue_name(job.engine, job.model),
        )

    try:
        # apply_async is synchronous (about 0.5 ms); keep it off the event loop.
        await asyncio.to_thread(send)
    except Exception as exc:
        error = {"code": "queue_unavailable", "message": f"could not enqueue: {exc}"}
        await job_repo.fail_queued_job(session, job.id, error)
        raise ServiceUnavailable(
            "The job queue is unavailable; retry shortly.", code="queue_unavailable"
        ) from exc


async def load_job(session: AsyncSession, raw_id: str) -> Job:
    job = await job_repo.get_job(session, parse_job_id(raw_id))
    if job is None:
        raise JobNotFound(f"No job with id '{raw_id}'.", param="id")
    return job


async def live_output(state: AppState, job: Job) -> str | None:
    """The text so far: the replay log while running, the stored output after."""
    if job.status != JobStatus.RUNNING.value:
        return job.output
    events = await read_log(state.redis, str(job.id))
    return "".join(e.get("text", "") for e in events if e["type"] == "token")


async def cancel_job(state: AppState, session: AsyncSession, raw_id: str) -> Job:
    """Cancel a job: a queued one never starts, a running one stops at its next token."""
    job = await load_job(session, raw_id)
    if JobStatus(job.status).is_final:
        return job
    await state.redis.set(cancel_key(str(job.id)), "1", ex=state.settings.cancel_flag_ttl_s)
    cancelled = await job_repo.cancel_queued_job(session, job.id)
    if cancelled is not None:
        await _publish_queued_cancel(state, cancelled)
        return cancelled
    return await _await_final(session, job)


async def _publish_queued_cancel(state: AppState, job: Job) -> None:
    # No worker ever claims this job, so the API owns its one and only event, seq 0.
    usage = {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": 0,
        "total_tokens": job.prompt_tokens,
    }
    payload = encode_event(
        0, "end", {"finish_reason": "cancelled", "usage": usage, "timings": None}
    )
    job_id = str(job.id)
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.rpush(event_log_key(job_id), payload)
        pipe.expire(event_log_key(job_id), state.settings.event_log_ttl_s)
        pipe.publish(event_channel(job_id), payload)
        await pipe.execute()


async def _await_final(session: AsyncSession, job: Job) -> Job:
    """Give a running job the moment it needs to stop, so the answer shows it stopped."""
    deadline = time.monotonic() + _CANCEL_WAIT_S
    current = job
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        fresh = await job_repo.get_job(session, job.id)
        if fresh is None:
            break
        current = fresh
        if JobStatus(current.status).is_final:
            break
    return current
