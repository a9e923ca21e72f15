"""`inferq status`: live workers, queues and their depths, and job rates, as terminal tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import func, select

from inferq.catalog import catalog
from inferq.db.models import Job
from inferq.db.session import make_engine, make_sessionmaker
from inferq.queue.names import queue_name
from inferq.queue.registry import live_workers
from inferq.settings import Settings


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def gather_status(settings: Settings) -> dict[str, Any]:
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
    engine = make_engine(settings)
    try:
        workers = await live_workers(client)
        queues = {queue_name(s.engine, s.name) for s in catalog(settings).values()}
        queues |= {str(w["queue"]) for w in workers if w.get("queue")}
        depths = {q: await client.llen(q) for q in sorted(queues)}
        since = datetime.now(UTC) - timedelta(minutes=5)
        async with make_sessionmaker(engine)() as session:
            query = (
                select(Job.status, func.count()).where(Job.created_at >= since).group_by(Job.status)
            )
            counts = dict((await session.execute(query)).tuples().all())
    finally:
        await client.aclose()
        await engine.dispose()
    return {"workers": workers, "queues": depths, "jobs_last_5_min": counts}


def render_status(status: dict[str, Any]) -> str:
    workers = [
        [w.get("id"), w.get("engine"), w.get("model"), w.get("device", "-"),
         f"{w.get('slots_busy', '-')}/{w.get('slots', '-')}",
         w.get("tokens_per_s", "-")]
        for w in status["workers"]
    ]  # fmt: skip
    queues = [[name, depth] for name, depth in status["queues"].items()]
    jobs = [[state, count] for state, count in sorted(status["jobs_last_5_min"].items())]
    return "\n\n".join([
        "Workers\n" + table(["id", "engine", "model", "device", "slots", "tok/s"], workers),
        "Queues\n" + table(["queue", "depth"], queues),
        "Jobs created in the last 5 minutes\n" + table(["status", "count"], jobs),
    ])  # fmt: skip


def run_status(settings: Settings) -> int:
    print(render_status(asyncio.run(gather_status(settings))))
    return 0
