"""An API process that dies mid-job loses nothing: the job lives in the worker, Redis and SQL."""

from __future__ import annotations

import signal

import httpx

from tests.conftest import API_PORT, AUTH, read_sse, submit, wait_final
from tests.stack import start_api

PORT = API_PORT + 1
WORDS = " ".join(f"r{i}" for i in range(60))


async def test_api_restart_while_job_runs_loses_nothing(stack: str) -> None:
    api = start_api(PORT, name="api-restart")
    base = f"http://127.0.0.1:{PORT}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=AUTH) as client:
            accepted = await submit(client, model="echo", prompt=WORDS, max_tokens=60)
            head = await read_sse(client, accepted["id"], stop_after=5)
        api.stop(signal.SIGKILL)
        api = start_api(PORT, name="api-restart")
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=AUTH) as client:
            tail = await read_sse(client, accepted["id"], last_event_id=head[-1]["seq"])
            job = await wait_final(client, accepted["id"])
    finally:
        api.stop()
    events = head + tail
    assert [e["seq"] for e in events] == list(range(61))
    assert "".join(e.get("text", "") for e in events) == WORDS == job["output"]
    assert job["status"] == "completed"
