"""Submitting, reading and cancelling jobs: the logic behind the jobs router."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api.schemas import JobCreate
from inferq.api.state import AppState
from inferq.auth import admission
from inferq.auth.limits import has_limits
from inferq.auth.principal import current_principal, current_tenant_id
from inferq.auth.webhook_targets import check_webhook_url
from inferq.cache.service import CacheLookup
from inferq.catalog import ModelSpec
from inferq.context import Fitted, fit_messages, fit_text
from inferq.db import jobs as job_repo
from inferq.db.models import Job, JobStatus
from inferq.errors import (
    ContextLengthExceeded,
    InferqError,
    InvalidValue,
    JobNotFound,
    ServiceUnavailable,
)
from inferq.logs import request_id_given_var, request_id_var
from inferq.metrics import JOBS_SUBMITTED
from inferq.queue.dispatch import send_job
from inferq.queue.events import current_attempt_text
from inferq.queue.names import (
    cancel_key,
    request_id_key,
)
from inferq.queue.publisher import announce_final
from inferq.queue.stream import read_log
from inferq.registry.service import ModelRegistry, Route, Target, model_registry
from inferq.tokenizers import Tokenizer

# Tokenizing a long prompt takes milliseconds; above this size it leaves the event loop.
_INLINE_TOKENIZE_CHARS = 4096
_CANCEL_WAIT_S = 2.0
# Take a request id over only if it still names the finished jobs that were checked.
# Replace a key's value, with a TTL, only if it still holds what the caller read.
TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


class RequestIdInUse(InferqError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "request_id_in_use"


@dataclass(frozen=True)
class SubmitOptions:
    """What an API surface adds to a JobCreate.

    `fill_context`: an unset max_tokens becomes the rest of the context (as vLLM does).
    `grammar`: GBNF text that constrains decoding. `group_id`/`choice_index`: sibling jobs of
    one `n` > 1 request. `request_id_claimed`: the caller already holds the request id.
    """

    idempotency_key: str | None = None
    grammar: str | None = None
    fill_context: bool = False
    group_id: uuid.UUID | None = None
    choice_index: int | None = None
    request_id_claimed: bool = False
    # The request's Cache-Control header (no-cache: skip the lookup; no-store: do not store).
    cache_control: str | None = None
    # The caller already shortened the input from one of this many tokens (a chat session's
    # oldest turns dropped to fit INFERQ_MAX_MESSAGES): recorded like a token truncation.
    shortened_from_tokens: int | None = None


def parse_job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise JobNotFound(f"No job with id '{raw}'.", param="id") from None


async def submit_job(
    state: AppState,
    session: AsyncSession,
    body: JobCreate,
    *,
    job_id: uuid.UUID | None = None,
    options: SubmitOptions | None = None,
) -> Job:
    """Validate against the model, commit the job row, then enqueue its task.

    Rows the caller added to `session` (a chat turn's messages) commit with the job.
    """
    if body.webhook_url is not None:
        await check_webhook_url(body.webhook_url, state.settings.webhook_allow_private)
    target = await _resolve(state, body)  # the version (inferq.registry)
    spec = target.spec
    if body.max_tokens > spec.context_length:
        raise InvalidValue(
            f"max_tokens: must be at most {spec.context_length} for model '{spec.name}'",
            param="max_tokens",
        )
    prompt, prompt_tokens = await _prompt_of(state, spec, body)
    options = options or SubmitOptions()
    if options.fill_context:
        body = body.model_copy(update={"max_tokens": max(spec.context_length - prompt_tokens, 1)})
    fitted = Fitted(prompt, _messages_of(body), prompt_tokens, prompt_tokens, truncated=False)
    if prompt_tokens + body.max_tokens > spec.context_length and body.truncate == "auto":
        fitted = await _compact(state, spec, body, spec.context_length - body.max_tokens)
        prompt, prompt_tokens = fitted.prompt, fitted.effective_tokens
    fitted = _shortened_by_caller(fitted, options)
    if prompt_tokens + body.max_tokens > spec.context_length:
        raise ContextLengthExceeded(
            f"This model's context is {spec.context_length} tokens; the prompt has "
            f"{prompt_tokens} and max_tokens asks for {body.max_tokens}.",
            param="messages" if body.messages is not None else "prompt",
        )
    body = admission.check_sizes(
        state.settings, spec, body, prompt_tokens, filled=options.fill_context
    )
    job_id = job_id or uuid.uuid4()
    if not options.request_id_claimed:
        await claim_request_id(state, session, [job_id])
    params = _params(body, options)
    # An L1 hit needs no worker: it is answered before routing, so it neither waits for a
    # live pool nor takes a breaker's probe.
    cached = await _cache_lookup(state, target, body, fitted, params, options)
    route: Route | None = None
    if not cached.hit:
        route = await _route(state, target, body, job_id)  # a live pool, past its breaker
        if route.target.fallback_from is not None:  # the fallback of an open breaker
            target = route.target
            cached = await _cache_lookup(state, target, body, fitted, params, options)
    if cached.hit:
        route = None
    spec = target.spec
    principal = current_principal()  # the same admission for every surface (inferq.auth)
    tokens = prompt_tokens + body.max_tokens
    queue = route.queue if route is not None else None  # None: a hit, never queued
    await admission.admit(state, session, principal, spec, job_id, tokens, queue=queue)
    # L2 after admission: a refused request costs no embedding.
    await state.cache.lookup_semantic(cached)
    job = Job(
        id=job_id,
        created_at=datetime.now(UTC),
        attempts=0,
        model=spec.name,
        engine=spec.engine,
        status=JobStatus.QUEUED.value,
        params=params,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        messages=fitted.messages,
        prompt_truncated=fitted.truncated,
        original_prompt_tokens=fitted.original_tokens,
        effective_prompt_tokens=prompt_tokens,
        request_id=request_id_var.get(),
        end_user=body.user,
        idempotency_key=options.idempotency_key,
        group_id=options.group_id,
        choice_index=options.choice_index,
        tenant_id=principal.tenant_id,
        webhook_url=body.webhook_url,
        model_version=target.version,
        queue=route.queue if route else None,
        route=route.as_json() if route else target.route_json(),
    )
    await state.cache.attach(session, cached, job)  # a hit completes the job; a miss preps fill
    if cached.hit:
        # The row and the replay log go to two servers at once: both are written before the
        # answer is, so any reader after it finds both. A log left by a failed INSERT names
        # a job nobody can read, and expires.
        await asyncio.gather(job_repo.insert_job(session, job), state.cache.replay(job, cached))
        JOBS_SUBMITTED.labels(job.model).inc()
        if has_limits(principal):  # otherwise admission charged nothing to settle
            await admission.settle_job(state, job)
        return job
    await job_repo.insert_job(session, job)
    JOBS_SUBMITTED.labels(job.model).inc()
    await _enqueue(state, session, job)
    state.cache.store_entry_later(cached, job)
    return job


def _shortened_by_caller(fitted: Fitted, options: SubmitOptions) -> Fitted:
    """Record a cut the caller made (SubmitOptions.shortened_from_tokens) as a truncation."""
    if options.shortened_from_tokens is None:
        return fitted
    return replace(fitted, original_tokens=options.shortened_from_tokens, truncated=True)


async def _cache_lookup(
    state: AppState,
    target: Target,
    body: JobCreate,
    fitted: Fitted,
    params: dict[str, Any],
    options: SubmitOptions,
) -> CacheLookup:
    """L1 then L2 (inferq.cache): answers of another model version or of a sibling choice
    of an `n` > 1 request are kept apart."""
    return await state.cache.lookup(
        target.spec,
        fitted.prompt,
        fitted.messages,
        {**params, "choice_index": options.choice_index, "model_version": target.version},
        truncated=fitted.truncated,
        mode=body.cache.mode if body.cache else None,
        ttl=body.cache.ttl if body.cache else None,
        cache_control=options.cache_control,
    )


def _params(body: JobCreate, options: SubmitOptions) -> dict[str, Any]:
    params = body.sampling()
    if options.grammar is not None:
        params["grammar"] = options.grammar
    return params


async def claim_request_id(
    state: AppState, session: AsyncSession, job_ids: list[uuid.UUID]
) -> None:
    """Hold this request's id for its jobs; 409 while an earlier request's jobs are unfinished.

    The id is the client's X-Request-ID (or Request-Id); one the middleware made is unique
    and needs no claim.
    """
    request_id = request_id_var.get()
    if request_id is None or not request_id_given_var.get():
        return
    scoped = f"{current_tenant_id() or ''}:{request_id}"  # tenants never see each other's ids
    key, ttl = request_id_key(scoped), state.settings.request_id_ttl_s
    value = ",".join(str(job_id) for job_id in job_ids)
    for _ in range(3):
        if await state.redis.set(key, value, nx=True, ex=ttl):
            return
        holder = await state.redis.get(key)
        if holder is None:
            continue  # it expired between the two calls
        held = holder.decode() if isinstance(holder, bytes) else str(holder)
        if not await _all_final(session, held.split(",")):
            break
        if await state.redis.eval(TAKE_OVER, 1, key, held, value, str(ttl)):
            return
    raise RequestIdInUse(
        f"A request with id '{request_id}' is still in flight.", param="X-Request-ID"
    )


async def _all_final(session: AsyncSession, job_ids: list[str]) -> bool:
    """True when none of these jobs can still produce tokens (a never-committed one counts)."""
    for raw in job_ids:
        job = await job_repo.get_job(session, parse_job_id(raw))
        if job is not None and not JobStatus(job.status).is_final:
            return False
    return True


def _registry(state: AppState) -> ModelRegistry:
    return model_registry(state.settings, state.redis, state.sessions)


async def _resolve(state: AppState, body: JobCreate) -> Target:
    """The version this request goes to: pinned, active, or a traffic policy's arm.

    A policy's arm is sticky per the request's `user` (else its `session_id`, else random).
    """
    session_id = (body.model_extra or {}).get("session_id")
    sticky = body.user or (str(session_id) if session_id else None)
    return await _registry(state).resolve(body.model, sticky)


async def _route(state: AppState, target: Target, body: JobCreate, job_id: uuid.UUID) -> Route:
    """503 rather than a job that would wait forever: a live pool of the version, by load,
    whose breaker lets it through (or the version's fallback); 404 for an unknown adapter."""
    return await _registry(state).route(target, str(job_id), body.adapter)


async def tokenizer_of(state: AppState, spec: ModelSpec) -> Tokenizer:
    """The model's tokenizer: a dict read once loaded; loading it leaves the event loop."""
    tokenizer = state.tokenizers.loaded(spec)
    if tokenizer is None:
        tokenizer = await asyncio.to_thread(state.tokenizers.get, spec)
    return tokenizer


async def tokens_in(tokenizer: Tokenizer, text: str) -> int:
    """Tokens of `text`; a long text is tokenized off the event loop."""
    if len(text) > _INLINE_TOKENIZE_CHARS:
        return len(await asyncio.to_thread(tokenizer.encode, text))
    return _short_count(tokenizer, text)


# Repeats are what the caches answer, and counting them again was 6 % of an L1 hit's CPU.
@functools.lru_cache(maxsize=2048)
def _short_count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text))


async def _prompt_of(state: AppState, spec: ModelSpec, body: JobCreate) -> tuple[str, int]:
    tokenizer = await tokenizer_of(state, spec)
    if body.messages is not None:
        prompt = tokenizer.render_chat([m.model_dump() for m in body.messages])
    else:
        assert body.prompt is not None
        prompt = body.prompt
    return prompt, await tokens_in(tokenizer, prompt)


def _messages_of(body: JobCreate) -> list[dict[str, Any]] | None:
    return [m.model_dump() for m in body.messages] if body.messages else None


async def _compact(state: AppState, spec: ModelSpec, body: JobCreate, budget: int) -> Fitted:
    """Head/tail compaction (see inferq.context); tokenizing many times leaves the loop."""
    tokenizer = await tokenizer_of(state, spec)
    messages = _messages_of(body)
    if messages is not None:
        return await asyncio.to_thread(fit_messages, tokenizer, messages, budget)
    assert body.prompt is not None
    return await asyncio.to_thread(fit_text, tokenizer, body.prompt, budget)


async def _enqueue(state: AppState, session: AsyncSession, job: Job) -> None:
    try:
        await send_job(state.celery, job)
    except Exception as exc:
        error = {"code": "queue_unavailable", "message": f"could not enqueue: {exc}"}
        await job_repo.fail_queued_job(session, job.id, error)
        raise ServiceUnavailable(
            "The job queue is unavailable; retry shortly.", code="queue_unavailable"
        ) from exc


async def load_job(session: AsyncSession, raw_id: str) -> Job:
    """The caller's job; another tenant's id is 404, exactly like an unknown one."""
    job = await job_repo.get_job(session, parse_job_id(raw_id), tenant_id=current_tenant_id())
    if job is None:
        raise JobNotFound(f"No job with id '{raw_id}'.", param="id")
    return job


async def live_output(state: AppState, job: Job) -> str | None:
    """The text so far: the replay log while running, the stored output after."""
    if job.status != JobStatus.RUNNING.value:
        if has_limits(current_principal()):  # reconcile on read: refund, free the slot
            await admission.settle_job(state, job)
        return job.output
    return current_attempt_text(await read_log(state.redis, str(job.id)))


async def cancel_job(state: AppState, session: AsyncSession, raw_id: str) -> Job:
    """Cancel a job: a queued one never starts, a running one stops at its next token."""
    job = await load_job(session, raw_id)
    if JobStatus(job.status).is_final:
        return job
    await state.redis.set(cancel_key(str(job.id)), "1", ex=state.settings.cancel_flag_ttl_s)
    cancelled = await job_repo.cancel_queued_job(session, job.id)
    if cancelled is not None:
        await _publish_queued_cancel(state, cancelled)
        await admission.settle_job(state, cancelled)
        return cancelled
    return await _await_final(session, job)


async def _publish_queued_cancel(state: AppState, job: Job) -> None:
    usage = {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": 0,
        "total_tokens": job.prompt_tokens,
    }
    await asyncio.to_thread(
        announce_final, state.sync_redis, str(job.id), attempts=job.attempts,
        max_tokens=job.params["max_tokens"], owner="api",
        log_ttl_s=state.settings.event_log_ttl_s, lease_ttl_s=state.settings.lease_ttl_s,
        event_type="end", finish_reason="cancelled", usage=usage, timings=None,
    )  # fmt: skip


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
