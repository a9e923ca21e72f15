"""GET /v1/workers: the workers whose heartbeat is live, with their load."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inferq.api.deps import StateDep
from inferq.queue.registry import live_workers

router = APIRouter(tags=["workers"])


@router.get("/v1/workers")
async def list_workers(state: StateDep) -> dict[str, Any]:
    """Live workers, read fresh from Redis (this is the view operators look at)."""
    workers = await live_workers(state.redis)
    workers.sort(key=lambda w: (str(w.get("engine")), str(w.get("model")), str(w.get("id"))))
    return {"object": "list", "data": [{"object": "worker", **w} for w in workers]}
