"""System-test fixtures: real PostgreSQL, real Redis, a real API process and real workers.

The environment is fixed here, before anything imports inferq's settings, so that a plain
`pytest` run uses the test database and a test-only Redis db, never the development ones.
"""

from __future__ import annotations

import json
import os

os.environ.update(
    INFERQ_ENV="test",
    INFERQ_DATABASE_URL=os.environ.get(
        "INFERQ_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/inferq_test"
    ),
    INFERQ_REDIS_URL=os.environ.get("INFERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    INFERQ_CONTEXT_LENGTH="2048",
    INFERQ_LOG_LEVEL="INFO",
    HF_HUB_OFFLINE="1",
    # The webhook tests' receiver listens on 127.0.0.1 (tests/test_webhooks.py checks the guard).
    INFERQ_WEBHOOK_ALLOW_PRIVATE="true",
    # ggml reads it once per process, at the first matmul: whichever test runs llama.cpp first
    # (a plain `Llama` in the MLX tests, say) must not latch the tiled kernel on for the exact
    # engines after it (inferq.workers.llamacpp sets the same in a worker).
    GGML_CPU_TILED_MM="0",
)
os.environ.pop("INFERQ_BROKER_URL", None)
# Tiers of the rate-limit tests (tests/test_limits.py) besides the defaults; windows of a
# day, so the buckets do not visibly refill while a test runs.
os.environ["INFERQ_TIERS"] = json.dumps(
    {
        "free": {"requests": 100, "requests_window_s": 3600, "tokens": 20000, "concurrent": 2,
                 "priority": 0},
        "standard": {"requests": 600, "tokens": 200000, "concurrent": 16, "priority": 1},
        "pro": {"requests": 3000, "tokens": 2000000, "concurrent": 64, "priority": 2},
        "unlimited": {"priority": 3},
        "test-burst": {"requests": 100, "requests_window_s": 86400, "priority": 1},
        "test-small": {"requests": 5, "requests_window_s": 86400, "tokens": 100000,
                       "tokens_window_s": 86400, "priority": 1},
        "test-tokens": {"tokens": 1000, "tokens_window_s": 86400, "priority": 1},
    }
)  # fmt: skip

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from inferq.auth import keys
from inferq.catalog import BUNDLED_MODEL, ECHO_MODEL
from inferq.db.session import asyncpg_dsn
from inferq.settings import get_settings
from tests.stack import Proc, inferq_argv, start_api, start_worker, wait_workers

API_PORT = int(os.environ.get("INFERQ_TEST_API_PORT", "8765"))
ECHO_DELAY_S = "0.03"
# The tests' own tenant ("tests", tier unlimited, scopes inference+admin): `settings_env`
# stores this key's hash, and every client of the test API sends it.
_TEST_KEY = keys.generate_key()
API_KEY = _TEST_KEY.plaintext
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _pg_dsn() -> str:
    return asyncpg_dsn(get_settings().database_url)


async def _create_database() -> None:
    dsn = _pg_dsn()
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()


@pytest.fixture(scope="session")
def settings_env() -> None:
    """A migrated, emptied test database and an empty test Redis db."""
    import subprocess

    asyncio.run(_create_database())
    subprocess.run(inferq_argv("migrate"), check=True)

    async def truncate() -> None:
        conn = await asyncpg.connect(_pg_dsn())
        await conn.execute("TRUNCATE jobs")
        await conn.close()

    asyncio.run(truncate())
    asyncio.run(_store_test_key())
    redis.Redis.from_url(get_settings().redis_url).flushdb()


async def _store_test_key() -> None:
    from tests.auth_helpers import create_tenant

    tenant_id, _ = await create_tenant(_pg_dsn(), "tests", "unlimited")
    conn = await asyncpg.connect(_pg_dsn())
    await conn.execute(
        "INSERT INTO api_keys (id, tenant_id, prefix, secret_hash, scopes) "
        "VALUES (gen_random_uuid(), $1, $2, $3, $4)",
        tenant_id,
        _TEST_KEY.prefix,
        _TEST_KEY.secret_hash,
        ["inference", "admin", "operator"],
    )
    await conn.close()


@pytest.fixture(scope="session")
def stack(settings_env: None) -> Iterator[str]:
    """The API on API_PORT, an echo worker and a llama.cpp worker on the bundled model."""
    procs: list[Proc] = []
    try:
        procs.append(start_worker("echo", ECHO_MODEL, {"INFERQ_ECHO_TOKEN_DELAY_S": ECHO_DELAY_S}))
        procs.append(start_worker("llamacpp", BUNDLED_MODEL))
        wait_workers(get_settings().redis_url, {ECHO_MODEL, BUNDLED_MODEL})
        procs.append(start_api(API_PORT))
        yield f"http://127.0.0.1:{API_PORT}"
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
async def client(stack: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack, timeout=60, headers=AUTH) as c:
        yield c


@pytest.fixture
def api_key(settings_env: None) -> str:
    """The tests' tenant's key (see AUTH), for clients built by hand."""
    return API_KEY


@pytest.fixture
async def db() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_pg_dsn())
    yield conn
    await conn.close()


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """Submit a job that really runs: the response cache is off unless the test says otherwise."""
    body.setdefault("cache", {"mode": "off"})
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def wait_final(
    client: httpx.AsyncClient, job_id: str, timeout: float = 120
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)


async def read_sse(
    client: httpx.AsyncClient,
    job_id: str,
    last_event_id: int | None = None,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """Events of a job's SSE stream, as (id, event, data) checked against each other."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    events: list[dict[str, Any]] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue  # an SSE comment: keepalive or shutdown notice
            if line:
                key, _, value = line.partition(": ")
                frame[key] = value
                continue
            data = json.loads(frame["data"])
            assert int(frame["id"]) == data["seq"] and frame["event"] == data["type"]
            events.append(data)
            frame = {}
            if data["type"] in ("end", "error") or (stop_after and len(events) >= stop_after):
                break
    return events
