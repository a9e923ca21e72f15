"""Redis and PostgreSQL outages, on PRIVATE servers (never the shared ones): nothing is lost.

The stack here is the chaos harness's private cluster: its own redis-server (no disk), its
own PostgreSQL cluster, an API and one echo worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from bench.chaos import ChaosConfig, Cluster

from tests.conftest import API_PORT, read_sse, submit, wait_final

LOG_DIR = Path(os.environ.get("INFERQ_TEST_LOG_DIR", "/tmp/inferq-test-logs")) / "outages"


@pytest.fixture(scope="module")
def cluster(settings_env: None) -> Iterator[Cluster]:
    cfg = ChaosConfig(workers=1, token_delay_s=0.03, api_port=API_PORT + 1, log_dir=str(LOG_DIR))
    cluster = Cluster(cfg)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=cluster.base_url, timeout=30, headers=cluster.auth
    ) as client:
        yield client


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


async def test_redis_down_answers_503_fast_and_recovers(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    finished = await submit(api, model="echo", prompt="f", max_tokens=1)
    await wait_final(api, finished["id"], timeout=30)
    running = await submit(api, model="echo", prompt=words("d", 60), max_tokens=60)
    await read_sse(api, running["id"], stop_after=2)
    cluster.redis.stop()
    try:
        for method, url, body in [
            ("POST", "/v1/jobs", {"model": "echo", "prompt": "x", "max_tokens": 2}),
            ("GET", f"/v1/jobs/{running['id']}", None),  # live output comes from Redis
            ("GET", f"/v1/jobs/{running['id']}/events", None),
            ("GET", f"/v1/jobs/{finished['id']}/events", None),  # its log is in Redis
        ]:
            started = time.monotonic()
            response = await api.request(method, url, json=body)
            assert time.monotonic() - started < 2.5
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"]
            assert response.json()["error"]["code"].endswith("unavailable")
    finally:
        cluster.redis.start()
    async with asyncio.timeout(30):
        body = {"model": "echo", "prompt": "y", "max_tokens": 2}
        while (await api.post("/v1/jobs", json=body)).status_code != 202:
            await asyncio.sleep(0.5)
    job = await wait_final(api, running["id"], timeout=60)
    assert job["status"] == "completed" and job["output"] == words("d", 60)


async def test_a_wait_that_redis_breaks_still_answers_with_the_job(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    """`Prefer: wait`: the job was accepted before the outage, so the client gets its id."""
    body = {"model": "echo", "prompt": words("w", 60), "max_tokens": 60, "cache": {"mode": "off"}}
    started = time.monotonic()
    waiting = asyncio.create_task(api.post("/v1/jobs", json=body, headers={"Prefer": "wait=4"}))
    await asyncio.sleep(1.0)  # submitted, and streaming its tokens
    cluster.redis.stop()
    try:
        response = await waiting
    finally:
        cluster.redis.start()
    assert time.monotonic() - started < 8
    assert response.status_code in (200, 202), response.text
    answered = response.json()
    job = await wait_final(api, answered["id"], timeout=60)
    assert job["status"] == "completed" and job["output"] == words("w", 60)
    if response.status_code == 200:  # it ended during the wait: the answer was the whole job
        assert answered["output"] == job["output"]


async def test_jobs_running_and_queued_through_a_redis_restart_all_complete(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    running = await submit(api, model="echo", prompt=words("r", 80), max_tokens=80)
    queued = [
        await submit(api, model="echo", prompt=words(f"q{n}", 5), max_tokens=5) for n in range(2)
    ]
    head = await read_sse(api, running["id"], stop_after=5)
    cluster.redis.stop()
    await asyncio.sleep(1)
    cluster.redis.start()  # empty: every queue and every event log is gone
    tail = await read_sse(api, running["id"], last_event_id=head[-1]["seq"])
    job = await wait_final(api, running["id"], timeout=60)
    assert job["status"] == "completed" and job["output"] == words("r", 80)
    assert job["attempts"] == 2
    restart = [e for e in tail if e["type"] == "restart"]
    assert restart and restart[0]["attempt"] == 2 and restart[0]["seq"] > head[-1]["seq"]
    after = tail[tail.index(restart[0]) :]
    assert [e["seq"] for e in after] == list(
        range(restart[0]["seq"], restart[0]["seq"] + len(after))
    )
    assert "".join(e.get("text", "") for e in after) == job["output"]
    for accepted, n in zip(queued, range(2), strict=True):
        final = await wait_final(api, accepted["id"], timeout=60)
        assert final["status"] == "completed" and final["output"] == words(f"q{n}", 5)


async def test_postgres_outage_delays_the_final_write_and_loses_nothing(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    accepted = await submit(api, model="echo", prompt=words("p", 40), max_tokens=40)
    await read_sse(api, accepted["id"], stop_after=3)
    cluster.pg.stop()
    try:
        response = await api.get(f"/v1/jobs/{accepted['id']}")
        assert response.status_code == 503 and response.headers["Retry-After"]
        await asyncio.sleep(3)  # the job's tokens end meanwhile; its final write must wait
    finally:
        cluster.pg.start()
    events = await read_sse(api, accepted["id"])
    job = await wait_final(api, accepted["id"], timeout=60)
    assert job["status"] == "completed" and job["output"] == words("p", 40)
    assert events[-1]["type"] == "end" and job["attempts"] == 1


async def test_a_duplicate_delivery_of_a_finished_job_is_dropped(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    from inferq.queue.celery_app import make_celery
    from inferq.queue.names import RUN_JOB_TASK, queue_name
    from inferq.settings import Settings

    accepted = await submit(api, model="echo", prompt="once", max_tokens=3)
    before = await wait_final(api, accepted["id"])
    celery = make_celery(Settings(redis_url=cluster.redis.url(0)))
    celery.send_task(RUN_JOB_TASK, args=[accepted["id"]], queue=queue_name("echo", "echo"))
    marker = await submit(api, model="echo", prompt="after", max_tokens=1)
    await wait_final(api, marker["id"])  # one worker, FIFO: the duplicate ran before this
    after = (await api.get(f"/v1/jobs/{accepted['id']}")).json()
    assert after == before
