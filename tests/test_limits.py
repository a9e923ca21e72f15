"""Rate limits and admission: exact across two API processes, the 429 and its headers (on
success and on streams too), token refunds, concurrency, queue depth and KV shedding."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from inferq.auth import admission
from inferq.auth.principal import Principal
from inferq.errors import ServiceUnavailable
from inferq.metrics import REFUSALS
from inferq.queue.names import WORKER_INDEX_KEY, queue_name, worker_key
from inferq.settings import get_settings
from tests.auth_helpers import bearer, create_key, create_tenant, tenant_with_key
from tests.conftest import API_PORT, _pg_dsn, wait_final
from tests.stack import start_api

JOB = {"model": "echo", "prompt": "hi", "max_tokens": 1}
OPENAI_HEADERS = [
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
]


@pytest.fixture(scope="module")
def second_api(stack: str) -> Iterator[str]:
    proc = start_api(API_PORT + 1, name="api-limits-2")
    try:
        yield f"http://127.0.0.1:{API_PORT + 1}"
    finally:
        proc.stop()


async def test_200_concurrent_requests_across_two_processes_admit_exactly_the_limit(
    stack: str, second_api: str
) -> None:
    key = await tenant_with_key(_pg_dsn(), f"burst-{uuid.uuid4().hex[:8]}", "test-burst")
    limits = httpx.Limits(max_connections=50)
    clients = [
        httpx.AsyncClient(base_url=url, headers=bearer(key), timeout=120, limits=limits)
        for url in (stack, second_api)
    ]
    try:
        for c in clients:  # warm both processes (pools, tokenizer) so both compete
            assert (await c.get("/v1/jobs", params={"limit": 1})).status_code == 200
        responses = await asyncio.gather(
            *(c.post("/v1/jobs", json=JOB) for _ in range(100) for c in clients)
        )
    finally:
        for c in clients:
            await c.aclose()
    statuses = [r.status_code for r in responses]
    odd = [r.text for r in responses if r.status_code not in (202, 429)]
    # Never more than the limit. A 503 is a refusal before admission (a backend pool
    # saturated by this burst on two cores), so it spends nothing and is no admission.
    assert statuses.count(202) == 100, odd[:3]  # the tier allows 100 a day
    assert statuses.count(429) + statuses.count(503) == 100, odd[:3]
    answered_by = {r.url.port for r in responses if r.status_code in (202, 429)}
    assert answered_by == {API_PORT, API_PORT + 1}  # both processes took part


async def test_429_carries_retry_after_and_the_ratelimit_headers(stack: str) -> None:
    key = await tenant_with_key(_pg_dsn(), f"small-{uuid.uuid4().hex[:8]}", "test-small")
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
        ok = await c.post("/v1/jobs", json=JOB)
        assert ok.status_code == 202
        assert all(h in ok.headers for h in OPENAI_HEADERS)
        assert ok.headers["x-ratelimit-limit-requests"] == "5"
        assert ok.headers["x-ratelimit-remaining-requests"] == "4"
        assert ok.headers["RateLimit-Policy"].startswith('"requests";q=5;w=86400')
        assert ok.headers["RateLimit"].startswith('"requests";r=4;t=')
        stream = await c.post(
            "/v1/chat/completions",
            json={"model": "echo", "stream": True, "max_tokens": 2,
                  "messages": [{"role": "user", "content": "hi"}]},
        )  # fmt: skip
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-ratelimit-remaining-requests"] == "3"
        for _ in range(3):
            assert (await c.post("/v1/jobs", json=JOB)).status_code == 202
        refused = await c.post("/v1/jobs", json=JOB)
        refused_stream = await c.post(
            "/v1/chat/completions",
            json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
    for response in (refused, refused_stream):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert all(h in response.headers for h in OPENAI_HEADERS)
        assert "RateLimit" in response.headers and "RateLimit-Policy" in response.headers


async def test_tokens_are_charged_at_admission_and_refunded_at_the_end(stack: str) -> None:
    key = await tenant_with_key(_pg_dsn(), f"tokens-{uuid.uuid4().hex[:8]}", "test-tokens")
    body = {"model": "echo", "prompt": "hi", "max_tokens": 300}
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
        first = await c.post("/v1/jobs", json={**body, "stop": ["never"], "max_tokens": 300})
        charged = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
        assert charged >= 300  # prompt + max_tokens
        await c.post(f"/v1/jobs/{first.json()['id']}/cancel")  # ends early: unused refunded
        job = await wait_final(c, first.json()["id"])
        used = job["usage"]["total_tokens"] if job["usage"] else 0
        second = await c.post("/v1/jobs", json=body)
        remaining = int(second.headers["x-ratelimit-remaining-tokens"])
        assert remaining == 1000 - used - charged, (remaining, used, charged)
        await c.post(f"/v1/jobs/{second.json()['id']}/cancel")
        # 1000 tokens a day: without the refunds, these could not all be admitted.
        for _ in range(4):
            response = await c.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            await c.post(f"/v1/jobs/{response.json()['id']}/cancel")
        too_big = await c.post("/v1/jobs", json={**body, "max_tokens": 1500})
        assert too_big.status_code in (422, 429)


async def test_concurrent_jobs_per_key(stack: str) -> None:
    tenant_id, _ = await create_tenant(_pg_dsn(), f"conc-{uuid.uuid4().hex[:8]}")
    key = await create_key(_pg_dsn(), tenant_id, limits=(None, None, 1))
    long = {"model": "echo", "prompt": "x", "max_tokens": 200}
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
        first = await c.post("/v1/jobs", json=long)
        assert first.status_code == 202
        second = await c.post("/v1/jobs", json=long)
        assert second.status_code == 429 and second.headers["Retry-After"]
        await c.post(f"/v1/jobs/{first.json()['id']}/cancel")
        third = await c.post("/v1/jobs", json=JOB)
        assert third.status_code == 202, third.text


def _principal(priority: int) -> Principal:
    settings = get_settings()
    tier = settings.tiers["free" if priority == 0 else "unlimited"]
    return Principal(uuid.uuid4(), "t", "x", tier, frozenset({"inference"}))


def _refusals(reason: str) -> float:
    return REFUSALS.labels(reason)._value.get()  # type: ignore[attr-defined, no-any-return]


async def test_queue_depth_and_kv_pressure_refuse_with_503(settings_env: None) -> None:
    settings = get_settings().model_copy(update={"max_queue_depth": 3})
    client = aioredis.Redis.from_url(settings.redis_url)
    model = f"h8-fake-{uuid.uuid4().hex[:6]}"
    spec = SimpleNamespace(engine="echo", name=model)
    state: Any = SimpleNamespace(redis=client, settings=settings)
    queue = queue_name("echo", model)
    try:
        await client.rpush(queue, "waiting")  # one request waits
        beats = {worker_key(f"{model}-{i}"): {"model": model, "kv_used": used, "kv_total": 100}
                 for i, used in enumerate((95, 91))}  # fmt: skip
        for k, v in beats.items():
            await client.set(k, json.dumps(v), ex=30)
            await client.zadd(WORKER_INDEX_KEY, {k: (time.time() + 30) * 1000})
        before = _refusals("overloaded")
        with pytest.raises(ServiceUnavailable) as shed:
            await admission.admit(state, None, _principal(0), spec, uuid.uuid4(), 10, queue=queue)  # type: ignore[arg-type]
        assert shed.value.code == "overloaded" and shed.value.retry_after_s >= 1
        assert _refusals("overloaded") == before + 1
        # The top tier still gets in; and so does everyone once one worker has room.
        await admission.admit(state, None, _principal(3), spec, uuid.uuid4(), 10, queue=queue)  # type: ignore[arg-type]
        await client.set(next(iter(beats)), json.dumps({"model": model, "kv_used": 10,
                                                         "kv_total": 100}), ex=30)  # fmt: skip
        await admission.admit(state, None, _principal(0), spec, uuid.uuid4(), 10, queue=queue)  # type: ignore[arg-type]
        await client.rpush(queue, "more", "more")
        before = _refusals("queue_full")
        with pytest.raises(ServiceUnavailable) as full:
            await admission.admit(state, None, _principal(3), spec, uuid.uuid4(), 10, queue=queue)  # type: ignore[arg-type]
        assert full.value.code == "queue_full" and _refusals("queue_full") == before + 1
    finally:
        fakes = [worker_key(f"{model}-{i}") for i in range(2)]
        await client.delete(queue, *fakes)
        await client.zrem(WORKER_INDEX_KEY, *fakes)
        await client.aclose()


async def test_size_limits(stack: str) -> None:
    async with httpx.AsyncClient(base_url=stack, timeout=60, headers=bearer(
        await tenant_with_key(_pg_dsn(), f"size-{uuid.uuid4().hex[:8]}"))) as c:  # fmt: skip
        many = [{"role": "user", "content": "x"}] * 600
        response = await c.post("/v1/jobs", json={"model": "echo", "messages": many})
        assert response.status_code == 422 and response.json()["error"]["param"] == "messages"
        huge = await c.post("/v1/jobs", json={"model": "echo", "prompt": "x" * (2 * 1024 * 1024)})
        assert huge.status_code == 413


async def _completed_unseen(
    dsn_conn: asyncpg.Connection, job_ids: list[str], timeout: float = 60
) -> None:
    """Wait, reading PostgreSQL only, until the jobs completed: nobody reads them through the
    API, so their charges stay unsettled (stale) in Redis."""
    async with asyncio.timeout(timeout):
        while True:
            done = await dsn_conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'completed'",
                job_ids,
            )
            if done == len(job_ids):
                return
            await asyncio.sleep(0.05)


async def test_concurrent_requests_are_not_refused_for_stale_charges(stack: str) -> None:
    """Every request refused for concurrency re-asks after a reconcile, even when another
    request settled the stale charges: with nothing running, the limit's worth gets in."""
    key = await tenant_with_key(_pg_dsn(), f"stale-{uuid.uuid4().hex[:8]}", "free")
    conn = await asyncpg.connect(_pg_dsn())
    try:
        async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
            for round_ in range(3):
                stale = [await c.post("/v1/jobs", json={**JOB, "prompt": f"stale {round_} {i}"})
                         for i in range(2)]  # fmt: skip
                assert [r.status_code for r in stale] == [202, 202], [r.text for r in stale]
                ids = [r.json()["id"] for r in stale]
                await _completed_unseen(conn, ids)  # both ended: nothing runs, 2 charged
                burst = await asyncio.gather(
                    *(c.post("/v1/jobs", json={**JOB, "prompt": f"now {round_} {i}"})
                      for i in range(2))
                )  # fmt: skip
                assert [r.status_code for r in burst] == [202, 202], [r.text for r in burst]
                await _completed_unseen(conn, [r.json()["id"] for r in burst])
    finally:
        await conn.close()
