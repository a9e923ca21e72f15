"""A job's events from a given seq: from its replay log, live from Redis, or from its row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from inferq.cache.service import answered_events
from inferq.db.models import Job, JobStatus
from inferq.queue.events import is_final
from inferq.queue.hub import EventHub
from inferq.queue.stream import read_log, stream_events


async def job_events(
    client: aioredis.Redis, hub: EventHub, job: Job, start: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Every event of `job` from seq `start`, replayed then live, up to its final event.

    A finished job is read once: from its log when the log is whole (a cache hit's answer, a
    late reader), with no live subscription; from its row when the log has expired.
    """
    if (answered := answered_events(job)) is not None:
        for event in answered[start:]:
            yield event
        return
    job_id = str(job.id)
    if JobStatus(job.status).is_final:
        logged = await read_log(client, job_id, 0)
        if not logged:
            for event in events_from_record(job)[start:]:
                yield event
            return
        if _whole(logged):
            for event in logged[start:]:
                yield event
            return
    async for event in stream_events(client, hub, job_id, start):
        yield event


def _whole(events: list[dict[str, Any]]) -> bool:
    """Seq 0 to a final event, with no gap (a log rebuilt after a Redis loss starts later)."""
    return (
        events[0]["seq"] == 0
        and events[-1]["seq"] == len(events) - 1
        and is_final(events[-1])
        and not any(is_final(event) for event in events[:-1])
    )


def events_from_record(job: Job) -> list[dict[str, Any]]:
    """The events of a finished job whose replay log has expired, rebuilt from PostgreSQL.

    The per-token split is gone with the log, so the output comes back as one token event.
    """
    events: list[dict[str, Any]] = []
    if job.output:
        events.append({"seq": 0, "type": "token", "text": job.output})
    final: dict[str, Any] = {"seq": len(events), "usage": job.usage, "timings": job.timings}
    if job.status == JobStatus.FAILED.value:
        final.update(type="error", error=job.error)
    else:
        final.update(type="end", finish_reason=job.finish_reason)
    events.append(final)
    return events
