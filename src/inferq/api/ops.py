"""Liveness and readiness."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from sqlalchemy import text

from inferq.api.deps import StateDep
from inferq.api.state import AppState
from inferq.catalog import catalog, resolve_model
from inferq.metrics import LIVE_WORKERS, QUEUE_DEPTH
from inferq.queue.names import queue_name
from inferq.queue.registry import live_workers

router = APIRouter(tags=["ops"])


# HEAD too: load balancers and uptime checkers often probe with it.
@router.api_route("/health", methods=["GET", "HEAD"])
async def health() -> dict[str, str]:
    """The process is alive; says nothing about its dependencies."""
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition; queue depths and live workers are read from Redis at scrape time."""
    # Without Redis, still serve the counters; the gauges keep their last values.
    with contextlib.suppress(RedisError):
        await _refresh_gauges(state)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _refresh_gauges(state: AppState) -> None:
    workers = await live_workers(state.redis)
    queues = {queue_name(spec.engine, spec.name) for spec in catalog(state.settings).values()}
    queues |= {str(w["queue"]) for w in workers if w.get("queue")}
    async with state.redis.pipeline(transaction=False) as pipe:
        for queue in sorted(queues):
            pipe.llen(queue)
        depths = await pipe.execute()
    for queue, depth in zip(sorted(queues), depths, strict=True):
        QUEUE_DEPTH.labels(queue).set(depth)
    LIVE_WORKERS.clear()
    for worker in workers:
        LIVE_WORKERS.labels(str(worker.get("model"))).inc()


@router.api_route("/ready", methods=["GET", "HEAD"])
async def ready(state: StateDep) -> JSONResponse:
    """200 when Redis and PostgreSQL answer and a live worker serves the default model."""
    checks: dict[str, Any] = {"redis": "ok", "postgresql": "ok", "worker": "ok"}
    missing: list[str] = []
    workers: list[dict[str, Any]] = []
    try:
        await state.redis.ping()
        workers = await live_workers(state.redis)
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
        missing.append("redis")
    try:
        async with state.db_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        checks["postgresql"] = f"unreachable: {type(exc).__name__}"
        missing.append("postgresql")
    default = resolve_model(state.settings, state.settings.default_model)
    if "redis" not in missing and not any(
        w.get("model") == default.name and w.get("engine") == default.engine for w in workers
    ):
        checks["worker"] = f"no live worker for {default.name} ({default.engine})"
        missing.append("worker")
    body = {"status": "ready" if not missing else "not_ready", "missing": missing, "checks": checks}
    return JSONResponse(body, status_code=200 if not missing else 503)
