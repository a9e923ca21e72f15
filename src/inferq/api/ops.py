"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from inferq.api.deps import StateDep
from inferq.catalog import resolve_model
from inferq.queue.registry import live_workers

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive; says nothing about its dependencies."""
    return {"status": "ok"}


@router.get("/ready")
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
