"""Run one job: claim it, stream its tokens through Redis, write its final record."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from inferq.cache.fill import fill_cache
from inferq.db import jobs as job_repo
from inferq.db.models import Job, JobStatus
from inferq.errors import REQUEST_ERROR_CODES, InferqError
from inferq.logs import job_id_var
from inferq.metrics import RUNNING_JOBS, observe_job
from inferq.queue.events import attempt_seq_floor
from inferq.queue.publisher import AttemptLost, EventPublisher
from inferq.tracing import tracer
from inferq.workers.engine import GenerationRequest, SamplingParams
from inferq.workers.lease import Lease, lease_keeper
from inferq.workers.runtime import WorkerRuntime
from inferq.workers.stopping import StopMatcher

log = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL is away: connection refused or reset, or a statement that never answers.
_DB_ERRORS = (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError)
_DB_CALL_TIMEOUT_S = 40.0
_CLAIM_RETRY_S = 60.0


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
    """Run one delivery of a job's task. Thread-safe: several may run at once in one process.

    A delivery of a job that is not `queued` (finished, cancelled, or running elsewhere)
    is dropped by the claim.
    """
    token = job_id_var.set(job_id)
    try:
        job = _claim(runtime, uuid.UUID(job_id))
        if job is None:
            log.info("job not claimable (cancelled, finished or taken), dropped")
            return
        _run_attempt(runtime, job)
    finally:
        job_id_var.reset(token)


def _run_attempt(runtime: WorkerRuntime, job: Job) -> None:
    settings = runtime.settings
    publisher = EventPublisher(
        runtime.redis,
        str(job.id),
        settings.event_log_ttl_s,
        attempt=job.attempts,
        retry_s=settings.redis_retry_s,
    )
    keeper = lease_keeper(
        runtime.redis, settings.lease_ttl_s, settings.lease_renew_s, settings.event_log_ttl_s
    )
    try:
        floor = attempt_seq_floor(job.attempts, job.params["max_tokens"])
        publisher.begin(runtime.worker_id, settings.lease_ttl_s, floor)
    except AttemptLost as exc:
        log.warning("attempt not started", extra={"attempt": job.attempts, "reason": str(exc)})
        return
    lease = keeper.hold(str(job.id), job.attempts)
    try:
        if job.attempts > 1:
            publisher.emit("restart", attempt=job.attempts)
        outcome = _generate(runtime, job, publisher, lease)
        _finish(runtime, job, outcome, publisher, lease)
    except AttemptLost as exc:
        # Someone else owns the job now (or will: the reconciler requeues it); write nothing.
        log.warning("attempt abandoned", extra={"attempt": job.attempts, "reason": str(exc)})
    finally:
        keeper.release(lease)


def _claim(runtime: WorkerRuntime, job_id: uuid.UUID) -> Job | None:
    """Claim the job, waiting out a short PostgreSQL outage.

    If PostgreSQL stays away, the task fails and is acknowledged; the job is still `queued`
    and the reconciler sends it again once it finds no task for it in the broker.
    """

    async def claim() -> Job | None:
        async with runtime.sessions() as session:
            return await job_repo.claim_job(session, job_id, runtime.info)

    return _with_db_retry(runtime, claim, _CLAIM_RETRY_S, "claim")


def _with_db_retry(
    runtime: WorkerRuntime, make: Callable[[], Coroutine[Any, Any, T]], budget_s: float, what: str
) -> T:
    deadline = time.monotonic() + budget_s
    delay = 0.2
    while True:
        try:
            return runtime.db_loop.run(make(), timeout=_DB_CALL_TIMEOUT_S)
        except _DB_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(f"{what} failed, retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _request_of(job: Job) -> GenerationRequest:
    p = job.params
    params = SamplingParams(
        max_tokens=p["max_tokens"],
        temperature=p["temperature"],
        top_p=p["top_p"],
        seed=p.get("seed"),
        stop=tuple(p.get("stop") or ()),
        presence_penalty=p.get("presence_penalty", 0.0),
        frequency_penalty=p.get("frequency_penalty", 0.0),
        grammar=p.get("grammar"),
    )
    return GenerationRequest(prompt=job.prompt, params=params)


def _generate(runtime: WorkerRuntime, job: Job, publisher: EventPublisher, lease: Lease) -> Outcome:
    outcome = Outcome(started=time.time())
    request = _request_of(job)
    if publisher.cancel_requested():
        outcome.finish_reason = "cancelled"
        return outcome
    matcher = StopMatcher(request.params.stop)
    span = tracer.start_span(
        "engine.generate",
        attributes={"inferq.job_id": str(job.id), "inferq.model": job.model,
                    "inferq.engine": job.engine, "inferq.prompt_tokens": job.prompt_tokens},
    )  # fmt: skip
    try:
        with RUNNING_JOBS.labels(job.model).track_inprogress():
            _decode(runtime, request, matcher, _Emitter(publisher, lease, outcome))
    except AttemptLost:
        raise
    except Exception as exc:  # an engine failure must end the job, never leave it running
        code = exc.code if isinstance(exc, InferqError) else "engine_error"
        if code in REQUEST_ERROR_CODES:
            log.warning("request refused by the engine", extra={"error": str(exc), "code": code})
        else:
            log.exception("engine failed")
        outcome.error = {"code": code, "message": f"{type(exc).__name__}: {exc}"}
    finally:
        span.set_attribute("inferq.completion_tokens", outcome.completion_tokens)
        span.end()
    return outcome


@dataclass
class _Emitter:
    """Sends a job's text as token events, and stops the attempt once its lease is lost."""

    publisher: EventPublisher
    lease: Lease
    outcome: Outcome

    def __call__(self, text: str) -> bool:
        """Publish a piece of text (if any); True when the job's cancel flag is set."""
        if self.lease.is_lost:
            raise AttemptLost("lease lost")
        if not text:
            return self.publisher.cancel_requested()
        self.outcome.pieces.append(text)
        return self.publisher.emit("token", text=text)


def _decode(
    runtime: WorkerRuntime, request: GenerationRequest, matcher: StopMatcher, emit: _Emitter
) -> None:
    outcome = emit.outcome
    with contextlib.closing(runtime.engine.generate(request)) as tokens:
        for token in tokens:
            now = time.time()
            outcome.first_token_at = outcome.first_token_at or now
            outcome.last_token_at = now
            outcome.completion_tokens += 1
            cancelled = emit(matcher.feed(_storable(token.text)))
            if matcher.stopped:
                outcome.finish_reason = "stop"
                return
            if cancelled:
                outcome.finish_reason = "cancelled"
                return
    if rest := matcher.flush():
        emit(rest)
    hit_limit = outcome.completion_tokens >= request.params.max_tokens
    outcome.finish_reason = "length" if hit_limit else "stop"


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL, so a model's NUL byte would make the final write fail
    on every attempt; it streams and is stored as U+FFFD, as invalid UTF-8 already is."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


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


def _finish(
    runtime: WorkerRuntime, job: Job, outcome: Outcome, publisher: EventPublisher, lease: Lease
) -> None:
    """Store the final record, then announce the end: no end event before the output is stored."""
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
    if not _write_final(runtime, job, values, lease):
        raise AttemptLost("final write refused: this attempt was superseded")
    fill_cache(runtime.redis, job, values, outcome.pieces)  # before `end`: seen end, cached
    # PostgreSQL holds the record now; if Redis lost the fence meanwhile, still end the stream.
    if outcome.error is not None:
        publisher.emit("error", force=True, error=outcome.error, usage=usage, timings=timings)
    else:
        publisher.emit(
            "end", force=True, finish_reason=values["finish_reason"], usage=usage, timings=timings
        )
    log.info("job finished", extra={"status": values["status"], **usage})
    error_code = outcome.error["code"] if outcome.error else None
    observe_job(job.model, values["status"], error_code, timings, **_token_counts(usage))


def _token_counts(usage: dict[str, int]) -> dict[str, int]:
    return {"prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"]}  # fmt: skip


def _write_final(runtime: WorkerRuntime, job: Job, values: dict[str, Any], lease: Lease) -> bool:
    """The fenced final write, retried with backoff through a PostgreSQL outage.

    A retry can find its own earlier try committed (the reply was lost): the record then
    already shows this attempt's outcome, and that counts as written.
    """

    async def write() -> bool:
        if lease.is_lost:
            return False
        async with runtime.sessions() as session:
            if await job_repo.finish_job(session, job.id, job.attempts, **values):
                return True
            stored = await job_repo.get_job(session, job.id)
        return (
            stored is not None
            and stored.attempts == job.attempts
            and stored.status == values["status"]
            and stored.output == values["output"]
        )

    return _with_db_retry(runtime, write, runtime.settings.final_write_retry_s, "final write")
