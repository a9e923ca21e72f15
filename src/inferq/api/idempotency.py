"""Idempotency-Key: the same key and body within the TTL answers from the jobs the first
request created (no second generation); another body is 422.

On the OpenAI routes the answer is the finished result: while the first request runs, 409;
jobs that were cancelled (their client left, or cancelled them) gave nobody an answer, so a
retry with the key runs again instead of replaying the cancellation. On `POST /v1/jobs` the
answer is the job itself, whatever its state: the retry gets the first request's job.

The record lives in Redis (body hash and job ids); the key is also stored on each job row.
The answer is rebuilt from the jobs' events, so a replay is byte-for-byte the same response.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from typing import Any

from inferq.api import job_service
from inferq.api.state import AppState
from inferq.auth.principal import current_tenant_id
from inferq.db.models import Job, JobStatus
from inferq.errors import InferqError, InvalidRequest
from inferq.queue.names import idempotency_record_key

MAX_KEY_LENGTH = 255


class IdempotencyKeyInUse(InferqError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(InferqError):
    status_code = 422
    error_type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotentRequest:
    """One request's use of an Idempotency-Key: `begin`, then `create` its jobs."""

    def __init__(
        self,
        state: AppState,
        scope: str,
        key: str,
        body: dict[str, Any],
        *,
        results: bool = True,
    ):
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
        self.key = key
        self._state = state
        self._results = results  # replay finished results (OpenAI), or the jobs (REST)
        digest = hashlib.sha256(key.encode()).hexdigest()
        tenant = current_tenant_id() or ""  # one tenant's key never replays another's jobs
        self._record_key = idempotency_record_key(f"{tenant}:{scope}", digest)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        self._body_hash = hashlib.sha256(canonical.encode()).hexdigest()

    async def begin(self) -> list[str] | None:
        """None: this request goes ahead (the key is now held). Else the job ids to replay."""
        redis, ttl = self._state.redis, self._state.settings.idempotency_ttl_s
        fresh = json.dumps({"body": self._body_hash, "jobs": []})
        for _ in range(3):
            if await redis.set(self._record_key, fresh, nx=True, ex=ttl):
                return None
            raw = await redis.get(self._record_key)
            if raw is None:
                continue
            replay = await self._replay_of(json.loads(raw))
            if replay is not None:
                return replay
            if await redis.eval(job_service.TAKE_OVER, 1, self._record_key, raw, fresh, ttl):
                return None
        raise IdempotencyKeyInUse("This Idempotency-Key is being used; retry shortly.")

    async def _replay_of(self, record: dict[str, Any]) -> list[str] | None:
        """The jobs to answer from; None when they were cancelled (run the request again)."""
        if record["body"] != self._body_hash:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request body.",
                param="Idempotency-Key",
            )
        job_ids: list[str] = record["jobs"]
        in_flight = IdempotencyKeyInUse(
            "A request with this Idempotency-Key is still in flight.", param="Idempotency-Key"
        )
        if not job_ids:  # the first request has not created its jobs yet
            raise in_flight
        if not self._results:
            return job_ids
        statuses = await self._statuses(job_ids)
        if not all(status.is_final for status in statuses):
            raise in_flight
        return None if JobStatus.CANCELLED in statuses else job_ids

    async def _statuses(self, job_ids: list[str]) -> list[JobStatus]:
        async with self._state.sessions() as session:
            return [JobStatus((await job_service.load_job(session, j)).status) for j in job_ids]

    async def create(self, submitting: Awaitable[list[Job]]) -> list[Job]:
        """After `begin` held the key: the jobs, bound to it; if they fail to be created, the
        key is freed for a corrected retry."""
        try:
            jobs = await submitting
        except BaseException:
            await self._state.redis.delete(self._record_key)
            raise
        record = json.dumps({"body": self._body_hash, "jobs": [str(job.id) for job in jobs]})
        await self._state.redis.set(self._record_key, record, xx=True, keepttl=True)
        return jobs
