"""A stopping API tells its open streams and exits; the job goes on and nothing is lost."""

from __future__ import annotations

import signal
import time

import httpx

from tests.conftest import API_PORT, AUTH, read_sse, submit, wait_final
from tests.stack import start_api

PORT = API_PORT + 3
WORDS = " ".join(f"s{i}" for i in range(80))


async def test_sigterm_ends_open_streams_politely(stack: str) -> None:
    api = start_api(PORT, name="api-shutdown")
    lines: list[str] = []
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{PORT}", timeout=30, headers=AUTH
        ) as client:
            accepted = await submit(client, model="echo", prompt=WORDS, max_tokens=80)
            async with client.stream("GET", f"/v1/jobs/{accepted['id']}/events") as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line.startswith("id: 3"):
                        api.process.send_signal(signal.SIGTERM)
                        stopped_at = time.monotonic()
        ended_in = time.monotonic() - stopped_at
        api.process.wait(timeout=15)
    finally:
        api.stop()
    assert any(line.startswith(": server shutting down") for line in lines)
    assert ended_in < 5, f"the stream took {ended_in:.1f} s to end"
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert api.process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in api.log_path.read_text().split("Started server")[-1]
    last_seq = max(int(line[4:]) for line in lines if line.startswith("id: "))
    async with httpx.AsyncClient(base_url=stack, timeout=30, headers=AUTH) as client:
        rest = await read_sse(client, accepted["id"], last_event_id=last_seq)
        job = await wait_final(client, accepted["id"])
    assert rest[0]["seq"] == last_seq + 1 and rest[-1]["type"] == "end"
    assert job["status"] == "completed" and job["output"] == WORDS
