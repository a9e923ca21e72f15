"""Each worker serves its own Prometheus metrics, announced in its heartbeat."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import submit, wait_final


async def test_worker_exports_job_and_slot_metrics(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt="metrics please", max_tokens=3,
                            cache={"mode": "off"})  # fmt: skip
    await wait_final(client, accepted["id"])
    workers = (await client.get("/v1/workers")).json()["data"]
    echo = next(w for w in workers if w["model"] == "echo")
    assert isinstance(echo["metrics_port"], int)
    url = f"http://127.0.0.1:{echo['metrics_port']}/metrics"
    async with httpx.AsyncClient(timeout=10) as plain:
        async with asyncio.timeout(10):
            while f'inferq_worker_slots{{worker="{echo["id"]}",state="total"}}' not in (
                body := (await plain.get(url)).text
            ):
                await asyncio.sleep(0.5)  # gauges are set at the next heartbeat
    assert 'inferq_job_outcomes_total{model="echo",status="completed",error_code=""}' in body
    assert 'inferq_generated_tokens_total{model="echo"}' in body
    assert "inferq_ttft_seconds_bucket" in body
