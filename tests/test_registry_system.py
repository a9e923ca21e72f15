"""The registry end to end: a real API, real echo workers per version, real PostgreSQL/Redis.

Every check looks at which worker process served a job (its `worker.id` names the version the
worker was started with), so a policy that is stored but not applied fails here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from inferq.db.session import make_engine, make_sessionmaker
from inferq.queue.names import WORKER_KEY_PATTERN
from inferq.settings import get_settings
from tests.conftest import API_PORT, _pg_dsn, wait_final
from tests.stack import Proc, inferq_argv, wait_http

PORT = API_PORT + 1
COOLDOWN_S = 3.0
V2_QUEUE, V3_QUEUE = "inferq.echo.echo@2.0.0", "inferq.echo.echo@3.0.0"
# The response cache keys on the model name, not the version (see the note): keep it out.
NO_CACHE = {"cache": {"mode": "off"}}
WORKER_ENV = {"INFERQ_ECHO_TOKEN_DELAY_S": "0.02", "INFERQ_WORKER_SLOTS": "2"}


async def _reset_registry_and_key() -> str:
    conn = await asyncpg.connect(_pg_dsn())
    await conn.execute("DELETE FROM traffic_policies; DELETE FROM model_versions")
    await conn.close()
    from inferq.auth.service import create_key, ensure_tenant

    settings = get_settings()
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            tenant = await ensure_tenant(session, settings, "registry-tests", tier="unlimited")
            created = await create_key(session, tenant, scopes=["inference", "admin", "operator"])
            await session.commit()
            return created.plaintext
    finally:
        await engine.dispose()


def _register(*args: str) -> None:
    subprocess.run(inferq_argv("models", "register", *args), check=True, capture_output=True)


def _wait_versions(versions: set[str], timeout: float = 60) -> None:
    client = redis.Redis.from_url(get_settings().redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = list(client.scan_iter(match=WORKER_KEY_PATTERN))
        records = [json.loads(v) for v in client.mget(keys) if v] if keys else []
        live = {r.get("model_version") for r in records if r.get("model") == "echo"}
        if versions <= live:
            return
        time.sleep(0.2)
    raise TimeoutError(f"echo workers of {versions} did not come up")


@pytest.fixture(scope="module")
def registry_stack(settings_env: None) -> Iterator[tuple[str, str]]:
    """An API (breaker: the default 5 failures, 3 s cool-down) and echo workers of 1.0.0,
    2.0.0 (with the adapter `sql-lora`) and 3.0.0 (which falls back to echo:1.0.0)."""
    key = asyncio.run(_reset_registry_and_key())
    _register("echo:2.0.0", "--engine", "echo", "--description", "the candidate")
    _register("echo:3.0.0", "--engine", "echo", "--fallback", "echo:1.0.0")
    procs: list[Proc] = []
    try:
        for model, extra in (
            ("echo", {}),
            ("echo:2.0.0", {"INFERQ_WORKER_ADAPTERS": "sql-lora"}),
            ("echo:3.0.0", {}),
        ):
            argv = inferq_argv("worker", "--engine", "echo", "--model", model)
            procs.append(Proc(f"registry-worker-{model}", argv, {**WORKER_ENV, **extra}))
        _wait_versions({"1.0.0", "2.0.0", "3.0.0"})
        env = {
            "INFERQ_API_PORT": str(PORT),
            "INFERQ_BREAKER_COOLDOWN_S": str(COOLDOWN_S),
            "INFERQ_BREAKER_WATCH_S": "0.2",
        }
        api = Proc("registry-api", inferq_argv("api"), env)
        procs.append(api)
        wait_http(f"http://127.0.0.1:{PORT}/health", api)
        yield f"http://127.0.0.1:{PORT}", key
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
async def api(registry_stack: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    url, key = registry_stack
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        yield client


async def _run(
    api: httpx.AsyncClient, model: str, prompt: str = "hi there", **body: Any
) -> dict[str, Any]:
    response = await api.post(
        "/v1/jobs", json={"model": model, "prompt": prompt, "max_tokens": 3, **NO_CACHE, **body}
    )
    assert response.status_code == 202, response.text
    return await wait_final(api, response.json()["id"], timeout=30)


def _served_by(job: dict[str, Any]) -> str:
    """The version of the worker process that ran the job, from its worker id."""
    label = job["worker"]["id"].split("@", 1)[0]  # "echo.echo" or "echo.echo:2.0.0"
    return label.split(":", 1)[1] if ":" in label else "1.0.0"


async def _admin(
    api: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await api.post(f"/v1/admin/models{path}", json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def test_versions_resolve_and_land_on_their_own_workers(api: httpx.AsyncClient) -> None:
    pinned = await _run(api, "echo:2.0.0")
    assert pinned["status"] == "completed"
    assert pinned["model_version"] == "2.0.0" and _served_by(pinned) == "2.0.0"
    assert pinned["route"]["queue"] == V2_QUEUE
    default = await _run(api, "echo")
    assert default["model_version"] == "1.0.0" and _served_by(default) == "1.0.0"
    missing = await api.post("/v1/jobs", json={"model": "echo:9.9.9", "prompt": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    listing = (await api.get("/v1/admin/models")).json()["data"]
    assert {v["id"] for v in listing} >= {"echo:1.0.0", "echo:2.0.0", "echo:3.0.0"}


async def test_activation_switches_new_jobs_and_in_flight_ones_finish_in_place(
    api: httpx.AsyncClient,
) -> None:
    slow = await api.post(
        "/v1/jobs", json={"model": "echo", "prompt": "slow words", "max_tokens": 40, **NO_CACHE}
    )
    assert slow.status_code == 202
    try:
        await _admin(api, "/echo/versions/2.0.0/activate")
        after = await _run(api, "echo")
        assert after["model_version"] == "2.0.0" and _served_by(after) == "2.0.0"
        before = await wait_final(api, slow.json()["id"])
        assert before["status"] == "completed" and _served_by(before) == "1.0.0"
    finally:
        await _admin(api, "/echo/versions/1.0.0/activate")
    assert _served_by(await _run(api, "echo")) == "1.0.0"


async def test_blue_green_switch_and_rollback(api: httpx.AsyncClient) -> None:
    policy = await _admin(api, "/echo/policies", {"kind": "blue_green", "candidate": "2.0.0"})
    pid = policy["id"]
    try:
        blue = [await _run(api, "echo", user=f"bg-{i}") for i in range(3)]
        assert {_served_by(j) for j in blue} == {"1.0.0"}
        await _admin(api, f"/echo/policies/{pid}/switch")
        green = [await _run(api, "echo", user=f"bg-{i}") for i in range(3)]
        assert {_served_by(j) for j in green} == {"2.0.0"}
        assert {j["route"]["arm"] for j in green} == {"candidate"}
        await _admin(api, f"/echo/policies/{pid}/rollback")
        back = [await _run(api, "echo", user=f"bg-{i}") for i in range(3)]
        assert {_served_by(j) for j in back} == {"1.0.0"}
    finally:
        await _admin(api, f"/echo/policies/{pid}/stop")


async def test_ab_split_is_sticky_and_summarised(api: httpx.AsyncClient) -> None:
    policy = await _admin(api, "/echo/policies", {"kind": "ab", "candidate": "2.0.0", "share": 0.5})
    pid = policy["id"]
    try:
        first = {f"ab-{i}": _served_by(await _run(api, "echo", user=f"ab-{i}")) for i in range(24)}
        assert set(first.values()) == {"1.0.0", "2.0.0"}
        for user in list(first)[:8]:
            assert _served_by(await _run(api, "echo", user=user)) == first[user]
        failed = await _run(api, "echo", prompt="boom <fail>", user="ab-0")
        assert failed["status"] == "failed"
        summary = (await api.get(f"/v1/admin/models/echo/policies/{pid}/summary")).json()
    finally:
        await _admin(api, f"/echo/policies/{pid}/stop")
    arms = summary["arms"]
    assert arms["control"]["requests"] + arms["candidate"]["requests"] == 24 + 8 + 1
    assert sum(a["errors"] for a in arms.values()) == 1
    for arm in arms.values():
        low, high = arm["error_rate_ci95"]
        assert 0 <= low <= arm["error_rate"] <= high <= 1
        assert arm["ttft_ms"]["p50"] > 0 and arm["completion_tokens"] > 0
    assert "error_rate_diff" in summary["comparison"]


async def test_canary_step_changes_the_share(api: httpx.AsyncClient) -> None:
    body = {"kind": "canary", "candidate": "2.0.0", "percent": 0}
    pid = (await _admin(api, "/echo/policies", body))["id"]
    try:
        assert {_served_by(await _run(api, "echo", user=f"c-{i}")) for i in range(6)} == {"1.0.0"}
        step = await _admin(api, f"/echo/policies/{pid}/step", {"percent": 100})
        assert step["percent"] == 100
        assert {_served_by(await _run(api, "echo", user=f"c-{i}")) for i in range(6)} == {"2.0.0"}
    finally:
        await _admin(api, f"/echo/policies/{pid}/stop")


async def test_adapters_route_to_workers_that_declare_them(api: httpx.AsyncClient) -> None:
    job = await _run(api, "echo:2.0.0", adapter="sql-lora")
    assert _served_by(job) == "2.0.0" and job["route"]["adapter"] == "sql-lora"
    missing = await api.post(
        "/v1/jobs", json={"model": "echo", "prompt": "x", "adapter": "sql-lora"}
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "adapter_not_found"


async def _breaker(api: httpx.AsyncClient, pool: str) -> dict[str, Any]:
    listing = (await api.get("/v1/admin/breakers")).json()["data"]
    return next(b for b in listing if b["pool"] == pool)


async def _until(api: httpx.AsyncClient, pool: str, state: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while (await _breaker(api, pool))["state"] != state:
            await asyncio.sleep(0.1)


async def _fail_enough(api: httpx.AsyncClient, model: str) -> None:
    # The default threshold: another API process of the session may be the one counting.
    for _ in range(get_settings().breaker_failures):
        job = await _run(api, model, prompt="please <fail>")
        assert job["status"] == "failed" and job["error"]["code"] == "engine_error"


async def test_open_breaker_sends_requests_to_the_fallback(api: httpx.AsyncClient) -> None:
    assert (await _breaker(api, V3_QUEUE))["state"] == "closed"
    await _fail_enough(api, "echo:3.0.0")
    await _until(api, V3_QUEUE, "open")
    job = await _run(api, "echo:3.0.0", prompt="still served")
    assert job["status"] == "completed"
    assert job["route"]["fallback_from"] == "echo:3.0.0"
    assert job["model_version"] == "1.0.0" and _served_by(job) == "1.0.0"
    reset = await api.post(f"/v1/admin/breakers/{V3_QUEUE}/reset")
    assert reset.json()["state"] == "closed"
    assert _served_by(await _run(api, "echo:3.0.0")) == "3.0.0"


async def test_breaker_walks_closed_open_half_open_closed(api: httpx.AsyncClient) -> None:
    await _fail_enough(api, "echo:2.0.0")  # 2.0.0 declares no fallback
    await _until(api, V2_QUEUE, "open")
    refused = await api.post("/v1/jobs", json={"model": "echo:2.0.0", "prompt": "x"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_unavailable"
    assert 1 <= int(refused.headers["Retry-After"]) <= COOLDOWN_S
    await asyncio.sleep(COOLDOWN_S + 0.2)
    body = {"model": "echo:2.0.0", "prompt": "probe words", "max_tokens": 40, **NO_CACHE}  # ~0.8 s
    probe = await api.post("/v1/jobs", json=body)
    assert probe.status_code == 202
    assert (await _breaker(api, V2_QUEUE))["state"] == "half_open"
    second = await api.post("/v1/jobs", json={"model": "echo:2.0.0", "prompt": "x"})
    assert second.status_code == 503  # one probe at a time
    done = await wait_final(api, probe.json()["id"])
    assert done["route"]["probe"] is True and _served_by(done) == "2.0.0"
    await _until(api, V2_QUEUE, "closed")
    assert _served_by(await _run(api, "echo:2.0.0")) == "2.0.0"
