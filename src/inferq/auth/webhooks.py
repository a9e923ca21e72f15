"""Outbound webhooks: when a job with a `webhook_url` ends, POST its result, signed.

Who delivers: the API processes, from the `webhook_deliveries` outbox that a trigger on
`jobs` fills in the same transaction as the write that ended the job (migration 0006). So
every way a job can end is covered (worker, cancel, reconciler, cache hit) with no change to
the worker, a delivery survives any restart, and several API processes share the work
(`FOR UPDATE SKIP LOCKED`, and a claim that pushes `next_attempt_at` past the try's timeout).
A failed try is retried with exponential backoff up to INFERQ_WEBHOOK_MAX_ATTEMPTS; every try
is recorded in the row's `log`.

When the loop wakes: the trigger NOTIFYs `inferq_webhooks` on each new delivery, and the loop
LISTENs on a connection of its own, so a delivery starts as its job's transaction commits;
otherwise it sleeps until the next retry is due, or 30 s at most (a NOTIFY lost with its
connection). It polled twice a second before, each claim an UPDATE on the event loop that
answers requests. While the LISTEN connection is down it polls twice a second again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.auth import signing
from inferq.auth.models import Tenant, WebhookDelivery
from inferq.auth.webhook_targets import WebhookTargetRefused, check_webhook_url
from inferq.background import cancel_task
from inferq.db.models import Job
from inferq.db.session import asyncpg_dsn
from inferq.settings import Settings

log = logging.getLogger(__name__)

_BATCH = 20
_POLL_S = 0.5  # while the LISTEN connection is down
_IDLE_MAX_S = 30.0  # with it up, when no retry is due sooner
CHANNEL = "inferq_webhooks"  # NOTIFYed by the trigger (migration 0006)
_MAX_BACKOFF_S = 3600.0
_CLAIM = text(
    """
    UPDATE webhook_deliveries
    SET next_attempt_at = now() + make_interval(secs => :lease_s), attempts = attempts + 1
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT :batch FOR UPDATE SKIP LOCKED
    )
    RETURNING id
    """
)
_NEXT_DUE = text(
    "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM webhook_deliveries "
    "WHERE status = 'pending'"
)


def backoff_s(attempt: int, base_s: float = 1.0) -> float:
    """Delay before try `attempt + 1`: 1 s, 2 s, 4 s, ... capped at an hour."""
    return min(base_s * 2.0 ** (attempt - 1), _MAX_BACKOFF_S)


def payload_of(job: Job) -> dict[str, Any]:
    return {
        "type": f"job.{job.status}",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "id": str(job.id),
            "object": "job",
            "status": job.status,
            "model": job.model,
            "output": job.output,
            "finish_reason": job.finish_reason,
            "usage": job.usage,
            "error": job.error,
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        },
    }


class WebhookDeliverer:
    """The API process's delivery loop (started and stopped by the lifespan)."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]):
        self._settings = settings
        self._sessions = sessions
        self._task: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inferq-webhooks")

    async def stop(self) -> None:
        await cancel_task(self._task)
        if self._listener is not None:
            self._listener.terminate()
        await self._client.aclose()

    @property
    def _listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def _run(self) -> None:
        while True:
            wait_s = _POLL_S
            try:
                await self._listen()
                self._wake.clear()  # before the claim: a NOTIFY during it ends the next wait
                ids = await self._claim()
                if ids:
                    await asyncio.gather(*(self.deliver(i) for i in ids))
                    continue
                if self._listening:
                    wait_s = await self._next_due_s()
            except Exception as exc:  # PostgreSQL away: try again on the next tick
                log.warning("webhook delivery loop failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def _listen(self) -> None:
        """LISTEN on a connection of this loop's own, if it is not already; polling goes on
        meanwhile when PostgreSQL will not have it."""
        if self._listening:
            return
        listener = None
        try:
            listener = await asyncpg.connect(asyncpg_dsn(self._settings.database_url), timeout=5)
            await listener.add_listener(CHANNEL, self._wake_up)
            # Lost: the loop wakes to reconnect, or polls while it cannot.
            listener.add_termination_listener(self._wake_up)
            self._listener = listener
        except Exception as exc:  # no connection to spare, or PostgreSQL away: claims go on
            if listener is not None:
                listener.terminate()
            log.warning("webhook listener down, polling", extra={"error": str(exc)})

    def _wake_up(self, *_: object) -> None:
        self._wake.set()

    async def _next_due_s(self) -> float:
        async with self._sessions() as db:
            due = (await db.execute(_NEXT_DUE)).scalar()
        return _IDLE_MAX_S if due is None else min(max(float(due), 0.0), _IDLE_MAX_S)

    async def _claim(self) -> list[str]:
        lease_s = self._settings.webhook_timeout_s + 5
        async with self._sessions() as db:
            rows = (await db.execute(_CLAIM, {"lease_s": lease_s, "batch": _BATCH})).all()
            await db.commit()
        return [row.id for row in rows]

    async def deliver(self, delivery_id: str) -> None:
        """One try of one claimed delivery, and its record."""
        async with self._sessions() as db:
            delivery = await db.get(WebhookDelivery, delivery_id)
            job = await db.get(Job, delivery.job_id) if delivery else None
            tenant = await db.get(Tenant, job.tenant_id) if job and job.tenant_id else None
        if delivery is None:
            return
        if job is None:
            await self._record(delivery, None, "the job no longer exists", 0.0, final=True)
            return
        try:  # again at each try: what the host resolves to may have changed since submit
            await check_webhook_url(delivery.url, self._settings.webhook_allow_private)
        except WebhookTargetRefused as exc:
            await self._record(delivery, None, exc.message, 0.0, final=True)
            return
        secret = tenant.webhook_secret if tenant else self._settings.webhook_dev_secret
        body = json.dumps(payload_of(job), separators=(",", ":")).encode()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                delivery.url,
                content=body,
                headers=signing.signed_headers(secret, delivery.id, body),
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - started) * 1000
        await self._record(delivery, status, error, ms, final=False)

    async def _record(
        self,
        delivery: WebhookDelivery,
        status: int | None,
        error: str | None,
        ms: float,
        *,
        final: bool,
    ) -> None:
        ok = status is not None and 200 <= status < 300
        attempt = delivery.attempts
        values: dict[str, Any] = {"last_status_code": status, "last_error": error}
        if ok:
            values.update(status="delivered", delivered_at=func.now())
        elif final or attempt >= self._settings.webhook_max_attempts:
            values.update(status="failed")
        else:
            delay = backoff_s(attempt, self._settings.webhook_backoff_s)
            values.update(next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay))
        entry = {"at": datetime.now(UTC).isoformat(), "attempt": attempt, "status_code": status,
                 "error": error, "ms": round(ms, 1)}  # fmt: skip
        values["log"] = WebhookDelivery.log.op("||")(literal([entry], JSONB))
        async with self._sessions() as db:
            await db.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
            )
            await db.commit()
        log.info(
            "webhook try",
            extra={"delivery": delivery.id, "attempt": attempt, "status": status, "ok": ok},
        )


async def deliveries_of(db: AsyncSession, job_id: Any) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    return list((await db.scalars(query.order_by(WebhookDelivery.created_at))).all())
