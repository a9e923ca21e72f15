"""The live worker registry: workers appear, vanish when they die, and gate admission."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import asyncpg
import httpx
import redis

from inferq.catalog import ECHO_MODEL
from inferq.queue.names import queue_name
from inferq.settings import get_settings
from tests.conftest import API_PORT, AUTH, wait_final
from tests.stack import Proc, inferq_argv, start_worker, wait_http

EMPTY_REDIS_URL = os.environ.get("INFERQ_TEST_EMPTY_REDIS_URL", "redis://127.0.0.1:6379/14")


async def _workers(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/workers")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    workers: list[dict[str, Any]] = body["data"]
    return workers


async def _wait_for(client: httpx.AsyncClient, pid: int, present: bool, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if any(w.get("pid") == pid for w in await _workers(client)) == present:
            return time.monotonic() - start
        await asyncio.sleep(0.2)
    raise AssertionError(f"worker {pid} {'never appeared' if present else 'never vanished'}")


async def test_worker_appears_then_vanishes_after_sigkill(client: httpx.AsyncClient) -> None:
    settings = get_settings()
    worker = start_worker("echo", ECHO_MODEL)
    worker.name = "worker-echo-registry"
    try:
        await _wait_for(client, worker.process.pid, present=True, timeout=60)
        record = next(w for w in await _workers(client) if w.get("pid") == worker.process.pid)
        assert record["engine"] == "echo" and record["model"] == ECHO_MODEL
        assert record["queue"] == queue_name("echo", ECHO_MODEL)
        assert record["device"] == "cpu" and record["version"]
        assert record["slots"] == 8 and record["slots_busy"] == 0
        first_beat = record["heartbeat_at"]
        await asyncio.sleep(settings.worker_heartbeat_s + 0.5)
        again = next(w for w in await _workers(client) if w.get("pid") == worker.process.pid)
        assert again["heartbeat_at"] > first_beat, "the heartbeat must be renewed"
        worker.stop(signal.SIGKILL)
        gone_after = await _wait_for(
            client, worker.process.pid, present=False, timeout=settings.worker_ttl_s + 5
        )
        assert gone_after <= settings.worker_ttl_s + 2.5
    finally:
        worker.stop(signal.SIGKILL)


async def test_llamacpp_worker_reports_kv_use(client: httpx.AsyncClient) -> None:
    workers = [w for w in await _workers(client) if w["engine"] == "llamacpp"]
    assert workers
    record = workers[0]
    assert record["kv_total"] == record["slots"] * record["n_ctx"]
    assert 0 <= record["kv_used"] <= record["kv_total"]
    assert {"tokens_per_s", "slots_busy", "device", "version", "queue"} <= set(record)


async def test_model_without_worker_gets_503_and_nothing_is_enqueued(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # An API on a Redis db with no heartbeats: for it, no worker serves any model.
    port = API_PORT + 1
    env = {
        "INFERQ_API_PORT": str(port),
        "INFERQ_REDIS_URL": EMPTY_REDIS_URL,
        "INFERQ_EMBEDDINGS_ENABLED": "false",
    }
    api = Proc("api-no-worker", inferq_argv("api"), env)
    empty = redis.Redis.from_url(EMPTY_REDIS_URL)
    queue = queue_name("echo", ECHO_MODEL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", api)
        before_len = empty.llen(queue)
        before_rows = await db.fetchval("SELECT count(*) FROM jobs")
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=AUTH) as c:
            response = await c.post(
                "/v1/jobs", json={"model": ECHO_MODEL, "prompt": "hello", "max_tokens": 2}
            )
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "no_worker_available" and ECHO_MODEL in error["message"]
        assert int(response.headers["Retry-After"]) >= 1
        assert empty.llen(queue) == before_len
        assert await db.fetchval("SELECT count(*) FROM jobs") == before_rows

        # An L1 hit needs no worker: warm an answer on the full stack, give this API's Redis
        # the cache's keys, and the repeat is answered while a miss still gets the 503.
        body = {"model": ECHO_MODEL, "prompt": "cached without a worker", "max_tokens": 3}
        warmed = await client.post("/v1/jobs", json={**body, "cache": {"mode": "exact"}})
        await wait_final(client, warmed.json()["id"])
        _copy_cache_keys(redis.Redis.from_url(get_settings().redis_url), empty)
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=AUTH) as c:
            hit = await c.post("/v1/jobs", json={**body, "cache": {"mode": "exact"}})
            miss = await c.post("/v1/jobs", json={**body, "prompt": "never asked before"})
            answered = (await c.get(f"/v1/jobs/{hit.json()['id']}")).json()
        assert hit.status_code == 202, hit.text
        assert hit.headers["x-inferq-cache"] == "hit-exact"
        assert answered["status"] == "completed"
        assert answered["output"] == (await wait_final(client, warmed.json()["id"]))["output"]
        assert miss.status_code == 503 and empty.llen(queue) == before_len
    finally:
        api.stop()
        empty.close()


def _copy_cache_keys(source: redis.Redis, target: redis.Redis) -> None:
    for key in source.scan_iter("inferq:cache:*"):
        dumped = source.dump(key)
        if dumped is not None:
            ttl = max(int(source.pttl(key)), 0)
            target.restore(key, ttl, dumped, replace=True)  # type: ignore[arg-type]
