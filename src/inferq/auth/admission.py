"""Admission control: the checks every surface's job passes before it is queued.

`job_service.submit_job` calls `check_sizes` and `admit` for every job of every surface
(REST, OpenAI, Ollama, WebSocket chat, inbound webhooks). In order, so that a refusal of one
kind never spends another's quota: sizes (400/422), queue depth (503 queue_full), KV pressure
(503 overloaded, lower tiers first), then the rate limits (429), which charge.
"""

from __future__ import annotations

import math
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api.schemas import JobCreate
from inferq.api.state import AppState
from inferq.auth.errors import RateLimited
from inferq.auth.headers import add_response_headers
from inferq.auth.limits import Decision, Limiter, has_limits, rate_headers
from inferq.auth.principal import Principal
from inferq.catalog import ModelSpec
from inferq.db.models import Job, JobStatus
from inferq.errors import InvalidValue, ServiceUnavailable
from inferq.metrics import REFUSALS
from inferq.queue.registry import live_workers
from inferq.settings import Settings

_QUEUE_FULL_RETRY_S = 5
_OVERLOADED_RETRY_S = 2
# A charge whose job row never appeared (the request failed before its commit) is released
# once it is this old; younger ones may belong to a commit still in flight.
_ORPHAN_AFTER_S = 60.0


def check_sizes(
    settings: Settings, spec: ModelSpec, body: JobCreate, prompt_tokens: int, *, filled: bool
) -> JobCreate:
    """Message count, prompt tokens and the max_tokens cap; a filled max_tokens is clamped."""
    if body.messages is not None and len(body.messages) > settings.max_messages:
        _refuse_size(f"messages: at most {settings.max_messages} messages", "messages")
    if settings.max_prompt_tokens and prompt_tokens > settings.max_prompt_tokens:
        param = "messages" if body.messages is not None else "prompt"
        _refuse_size(
            f"{param}: the prompt has {prompt_tokens} tokens; at most "
            f"{settings.max_prompt_tokens} are accepted",
            param,
        )
    cap = settings.max_tokens_cap
    if cap and body.max_tokens > cap:
        if filled:
            return body.model_copy(update={"max_tokens": cap})
        _refuse_size(f"max_tokens: must be at most {cap}", "max_tokens")
    return body


def _refuse_size(message: str, param: str) -> None:
    REFUSALS.labels("too_large").inc()
    raise InvalidValue(message, param=param)


async def admit(
    state: AppState,
    session: AsyncSession,
    principal: Principal,
    spec: ModelSpec,
    job_id: uuid.UUID,
    tokens: int,
    *,
    queue: str | None,
) -> None:
    """Queue depth, KV pressure, then the rate limits (charged only when all pass).

    `queue` is the one routing chose for the job; None for a job that will not be queued (a
    cache hit), which skips the first two checks: it loads no worker.
    """
    if queue is not None:
        await _check_load(state, principal, spec, queue)
    if not has_limits(principal):
        return
    limiter = Limiter(state.redis)
    decision = await limiter.admit(principal, job_id, tokens)
    # Jobs that ended unseen still hold tokens or slots: settle them, then ask again. Ask
    # again whatever this reconcile settled: a concurrent request may have settled the same
    # stale charges first (each is settled once), and they are gone all the same.
    if not decision.admitted and decision.refused_kind in ("tokens", "concurrent"):
        await reconcile(state, session, principal, limiter)
        decision = await limiter.admit(principal, job_id, tokens)
    add_response_headers(rate_headers(decision.readings))
    if not decision.admitted:
        _refuse_rate(decision, tokens)


async def _check_load(state: AppState, principal: Principal, spec: ModelSpec, queue: str) -> None:
    depth = int(await state.redis.llen(queue))  # the routed pool's, not the model's default
    if depth >= state.settings.max_queue_depth:
        REFUSALS.labels("queue_full").inc()
        raise ServiceUnavailable(
            f"The queue of model '{spec.name}' is full ({depth} waiting); retry later.",
            code="queue_full",
            retry_after_s=_QUEUE_FULL_RETRY_S,
        )
    if depth > 0 and principal.tier.priority < state.settings.shed_below_priority:
        await _shed_under_kv_pressure(state, spec)


async def _shed_under_kv_pressure(state: AppState, spec: ModelSpec) -> None:
    """503 when every live worker of the model reports KV use at or above the high-water mark.

    Heartbeats without KV figures count as not loaded: shedding needs every worker to say so.
    """
    workers = [w for w in await live_workers(state.redis) if w.get("model") == spec.name]
    ratios = [_kv_ratio(w) for w in workers]
    high = state.settings.kv_high_water
    if ratios and all(r is not None and r >= high for r in ratios):
        REFUSALS.labels("overloaded").inc()
        raise ServiceUnavailable(
            f"Model '{spec.name}' is overloaded (KV cache above {high:.0%} on every worker); "
            "retry shortly.",
            code="overloaded",
            retry_after_s=_OVERLOADED_RETRY_S,
        )


def _kv_ratio(worker: dict[str, object]) -> float | None:
    used, total = worker.get("kv_used"), worker.get("kv_total")
    if isinstance(used, int | float) and isinstance(total, int | float) and total > 0:
        return float(used) / float(total)
    return None


def _refuse_rate(decision: Decision, tokens: int) -> None:
    REFUSALS.labels("rate_limit").inc()
    kind = decision.refused_kind or "requests"
    if decision.retry_after_ms < 0:
        raise RateLimited(
            f"This request needs {tokens} tokens, more than the {kind} limit allows at once; "
            "lower max_tokens or the prompt.",
            retry_after_s=60,
            code="tokens_exceed_limit",
        )
    what = "concurrent jobs" if kind == "concurrent" else kind
    retry_after_s = max(1, math.ceil(decision.retry_after_ms / 1000))
    raise RateLimited(  # the delay in words too: a WebSocket frame has no Retry-After header
        f"Rate limit reached for {what}; retry after {retry_after_s} s.",
        retry_after_s=retry_after_s,
    )


async def reconcile(
    state: AppState, session: AsyncSession, principal: Principal, limiter: Limiter
) -> int:
    """Settle the tenant's charges whose jobs have ended (or never existed); how many."""
    running = await limiter.running(principal)
    if not running:
        return 0
    ids = [uuid.UUID(j) for j in running]
    rows = (
        await session.execute(select(Job.id, Job.status, Job.usage).where(Job.id.in_(ids)))
    ).all()
    found = {row.id: row for row in rows}
    settled = 0
    for job_id in ids:
        row = found.get(job_id)
        if row is not None and JobStatus(row.status).is_final:
            settled += await limiter.settle(principal.tenant_id, job_id, _used(row.usage))
        elif row is None and time.time() - running[str(job_id)] > _ORPHAN_AFTER_S:
            settled += await limiter.settle(principal.tenant_id, job_id, 0)
    return settled


def _used(usage: dict[str, int] | None) -> int:
    return int(usage.get("total_tokens", 0)) if usage else 0


async def settle_job(state: AppState, job: Job) -> None:
    """The job ended: refund its unused tokens and free its slot (idempotent)."""
    if JobStatus(job.status).is_final:
        await Limiter(state.redis).settle(job.tenant_id, job.id, _used(job.usage))
