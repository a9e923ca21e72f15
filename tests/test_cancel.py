"""Cancellation: queued jobs never start, running ones stop, finished ones stay as they are."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.conftest import read_sse, submit, wait_final

LONG = " ".join(f"t{i}" for i in range(300))


async def test_cancel_queued_job_never_starts(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # Fill every slot of the echo worker, so the next job has to wait in the queue.
    workers = (await client.get("/v1/workers")).json()["data"]
    slots = sum(w["slots"] for w in workers if w["model"] == "echo")
    blockers = [
        await submit(client, model="echo", prompt=LONG, max_tokens=60) for _ in range(slots)
    ]
    queued = await submit(client, model="echo", prompt="never", max_tokens=5)
    response = await client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled" and job["finish_reason"] == "cancelled"
    events = await read_sse(client, queued["id"])
    assert events == [
        {
            "seq": 0,
            "type": "end",
            "finish_reason": "cancelled",
            "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1},
            "timings": None,
        }
    ]
    for blocker in blockers:
        await client.post(f"/v1/jobs/{blocker['id']}/cancel")
        await wait_final(client, blocker["id"])
    await asyncio.sleep(0.3)  # time for the worker to receive and drop the cancelled task
    row = await db.fetchrow(
        "SELECT status, started_at, attempts FROM jobs WHERE id = $1::uuid", queued["id"]
    )
    assert row["status"] == "cancelled" and row["started_at"] is None and row["attempts"] == 0


async def test_cancel_running_echo_job_keeps_partial_text(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt=LONG, max_tokens=300)
    await read_sse(client, accepted["id"], stop_after=3)
    job = (await client.post(f"/v1/jobs/{accepted['id']}/cancel")).json()
    assert job["status"] == "cancelled"
    assert job["output"] and LONG.startswith(job["output"])
    assert job["usage"]["completion_tokens"] < 300


async def test_cancel_finished_job_changes_nothing(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt="done", max_tokens=2)
    before = await wait_final(client, accepted["id"])
    after = (await client.post(f"/v1/jobs/{accepted['id']}/cancel")).json()
    assert after == before and after["status"] == "completed"
