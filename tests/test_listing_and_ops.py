"""Listing jobs, health and readiness."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import httpx
from httpx import ASGITransport

from inferq.api.app import create_app
from inferq.settings import Settings, get_settings
from tests.conftest import submit, wait_final

EMPTY_REDIS_URL = os.environ.get("INFERQ_TEST_EMPTY_REDIS_URL", "redis://127.0.0.1:6379/14")


async def test_list_newest_first_with_cursor(client: httpx.AsyncClient) -> None:
    ids = [
        (await submit(client, model="echo", prompt=f"p{i}", max_tokens=1))["id"] for i in range(5)
    ]
    for job_id in ids:
        await wait_final(client, job_id)
    first = (await client.get("/v1/jobs?limit=3")).json()
    second = (await client.get(f"/v1/jobs?limit=3&cursor={first['next_cursor']}")).json()
    listed = [j["id"] for j in first["data"] + second["data"]]
    assert listed[:5] == ids[::-1]
    assert len(set(listed)) == len(listed)


async def test_list_filters_by_status(client: httpx.AsyncClient) -> None:
    job = await submit(client, model="echo", prompt="s", max_tokens=1)
    await wait_final(client, job["id"])
    completed = (await client.get("/v1/jobs?status=completed&limit=100")).json()["data"]
    assert completed and all(j["status"] == "completed" for j in completed)
    bad = await client.get("/v1/jobs?status=exploded")
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "status"


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["missing"] == []
    for path in ("/health", "/ready"):  # load balancers probe with HEAD
        head = await client.head(path)
        assert head.status_code == 200 and head.content == b""


async def test_ready_names_the_missing_worker() -> None:
    # Redis db 14 has no worker heartbeats: the API must say the worker is what is missing.
    base = get_settings()
    settings = Settings(
        **{
            **base.model_dump(),
            "redis_url": EMPTY_REDIS_URL,
        }
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/ready")
    await app.state.inferq.redis.aclose()
    await app.state.inferq.db_engine.dispose()
    assert response.status_code == 503
    assert response.json()["missing"] == ["worker"]


async def test_ready_names_unreachable_postgres_and_redis() -> None:
    base = get_settings()
    settings = Settings(
        **{
            **base.model_dump(),
            "redis_url": "redis://127.0.0.1:1/0",
            "database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/x",
        }
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/ready")
    await app.state.inferq.db_engine.dispose()
    assert response.status_code == 503
    assert set(response.json()["missing"]) == {"redis", "postgresql"}


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32


async def test_a_submission_retried_with_its_idempotency_key_is_the_same_job(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """POST /v1/jobs ignored the header: a retried submission made a second job."""
    body = {"model": "echo", "prompt": "once", "max_tokens": 30}
    headers = {"Idempotency-Key": f"rest-{uuid.uuid4().hex}"}
    first = await client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202 and "x-inferq-idempotent-replay" not in first.headers
    again = await client.post("/v1/jobs", json=body, headers=headers)  # still running
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["x-inferq-idempotent-replay"] == "true"
    other = await client.post("/v1/jobs", json={**body, "prompt": "twice"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    key = headers["Idempotency-Key"]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", key) == 1


async def test_a_request_that_only_reads_leaves_no_connection_in_a_transaction(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # Reads autobegin a transaction that nothing commits: the middleware's close of the
    # request's session ends it. More reads than the API's pool holds, at once.
    job = await submit(client, model="echo", prompt="read me", max_tokens=1)
    await wait_final(client, job["id"])
    reads = [
        client.get(f"/v1/jobs/{job['id']}") for _ in range(get_settings().database_pool_size * 3)
    ]
    assert {r.status_code for r in await asyncio.gather(*reads)} == {200}
    idle_in_transaction = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state = 'idle in transaction'"
        " AND pid <> pg_backend_pid()"
    )
    assert idle_in_transaction == 0
