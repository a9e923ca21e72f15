"""Run one job: claim it, stream its tokens through Redis, write its final record."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from inferq.db import jobs as job_repo
from inferq.db.models import Job, JobStatus
from inferq.logs import job_id_var
from inferq.queue.publisher import EventPublisher
from inferq.workers.engine import GenerationRequest, SamplingParams
from inferq.workers.runtime import WorkerRuntime
from inferq.workers.stopping import StopMatcher

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a generation produced, filled in as tokens arrive."""

    started: float
    pieces: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    finish_reason: str = "stop"
    error: dict[str, str] | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def run_job(runtime: WorkerRuntime, job_id: str) -> None:
    token = job_id_var.set(job_id)
    try:
        job = runtime.db_loop.run(_claim(runtime, uuid.UUID(job_id)))
        if job is None:
            log.info("job not claimable (cancelled, finished or taken), dropped")
            return
        publisher = EventPublisher(runtime.redis, job_id, runtime.settings.event_log_ttl_s)
        outcome = _generate(runtime, job, publisher)
        _finish(runtime, job, outcome, publisher)
    finally:
        job_id_var.reset(token)


async def _claim(runtime: WorkerRuntime, job_id: uuid.UUID) -> Job | None:
    async with runtime.sessions() as session:
        return await job_repo.claim_job(session, job_id, runtime.info)


def _request_of(job: Job) -> GenerationRequest:
    p = job.params
    params = SamplingParams(
        max_tokens=p["max_tokens"],
        temperature=p["temperature"],
        top_p=p["top_p"],
        seed=p.get("seed"),
        stop=tuple(p.get("stop") or ()),
    )
    return GenerationRequest(prompt=job.prompt, params=params)


def _generate(runtime: WorkerRuntime, job: Job, publisher: EventPublisher) -> Outcome:
    outcome = Outcome(started=time.time())
    request = _request_of(job)
    if publisher.cancel_requested():
        outcome.finish_reason = "cancelled"
        return outcome
    matcher = StopMatcher(request.params.stop)
    try:
        _decode(runtime, request, matcher, publisher, outcome)
    except Exception as exc:  # an engine failure must end the job, never leave it running
        log.exception("engine failed")
        outcome.error = {"code": "engine_error", "message": f"{type(exc).__name__}: {exc}"}
    return outcome


def _decode(
    runtime: WorkerRuntime,
    request: GenerationRequest,
    matcher: StopMatcher,
    publisher: EventPublisher,
    outcome: Outcome,
) -> None:
    with contextlib.closing(runtime.engine.generate(request)) as tokens:
        for token in tokens:
            now = time.time()
            outcome.first_token_at = outcome.first_token_at or now
            outcome.last_token_at = now
            outcome.completion_tokens += 1
            text = matcher.feed(token.text)
            cancelled = _emit(publisher, outcome, text)
            if matcher.stopped:
                outcome.finish_reason = "stop"
                return
            if cancelled:
                outcome.finish_reason = "cancelled"
                return
    _emit(publisher, outcome, matcher.flush())
    hit_limit = outcome.completion_tokens >= request.params.max_tokens
    outcome.finish_reason = "length" if hit_limit else "stop"


def _emit(publisher: EventPublisher, outcome: Outcome, text: str) -> bool:
    """Publish a piece of text (if any); True when the job's cancel flag is set."""
    if not text:
        return publisher.cancel_requested()
    outcome.pieces.append(text)
    return publisher.emit("token", text=text)


def _timings(job: Job, outcome: Outcome) -> dict[str, float | None]:
    created = job.created_at.timestamp()
    started = job.started_at.timestamp() if job.started_at else outcome.started
    first, last = outcome.first_token_at, outcome.last_token_at
    decoded = outcome.completion_tokens - 1
    return {
        "queue_ms": round((started - created) * 1000, 3),
        "ttft_ms": round((first - created) * 1000, 3) if first else None,
        "tpot_ms": round((last - first) * 1000 / decoded, 3)
        if first and last and decoded
        else None,
        "total_ms": round((time.time() - created) * 1000, 3),
    }


def _finish(runtime: WorkerRuntime, job: Job, outcome: Outcome, publisher: EventPublisher) -> None:
    usage = {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": job.prompt_tokens + outcome.completion_tokens,
    }
    timings = _timings(job, outcome)
    values: dict[str, Any] = {"output": outcome.text, "usage": usage, "timings": timings}
    if outcome.error is not None:
        values.update(status=JobStatus.FAILED.value, error=outcome.error, finish_reason=None)
    elif outcome.finish_reason == "cancelled":
        values.update(status=JobStatus.CANCELLED.value, finish_reason="cancelled")
    else:
        values.update(status=JobStatus.COMPLETED.value, finish_reason=outcome.finish_reason)
    written = runtime.db_loop.run(_write_final(runtime, job, values))
    if not written:
        log.warning("final write refused: this attempt was superseded")
        return
    if outcome.error is not None:
        publisher.emit("error", error=outcome.error, usage=usage, timings=timings)
    else:
        publisher.emit("end", finish_reason=values["finish_reason"], usage=usage, timings=timings)
    log.info("job finished", extra={"status": values["status"], **usage})


async def _write_final(runtime: WorkerRuntime, job: Job, values: dict[str, Any]) -> bool:
    async with runtime.sessions() as session:
        return await job_repo.finish_job(session, job.id, job.attempts, **values)
