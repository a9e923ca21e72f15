"""Helpers of the cache system tests: real tenants with keys, waiting for L2 to be ready."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.auth_helpers import bearer, tenant_with_key
from tests.conftest import _pg_dsn, read_sse, wait_final


@dataclass(frozen=True)
class Tenant:
    name: str
    auth: dict[str, str]


async def new_tenant(label: str) -> Tenant:
    """A fresh tenant with an inference+admin key: every test's cache starts empty."""
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    return Tenant(name, bearer(await tenant_with_key(_pg_dsn(), name)))


async def ask(
    client: httpx.AsyncClient,
    tenant: Tenant,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> tuple[str, dict[str, Any]]:
    """POST /v1/jobs as `tenant`; returns (x-inferq-cache, the final job)."""
    body.setdefault("model", "echo")
    body.setdefault("max_tokens", 6)
    response = await client.post("/v1/jobs", json=body, headers={**tenant.auth, **(headers or {})})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    return response.headers["x-inferq-cache"], await _final(client, tenant, job_id)


async def _final(client: httpx.AsyncClient, tenant: Tenant, job_id: str) -> dict[str, Any]:
    scoped = httpx.AsyncClient(base_url=client.base_url, headers=tenant.auth, timeout=60)
    async with scoped:
        return await wait_final(scoped, job_id)


async def stats(client: httpx.AsyncClient, tenant: Tenant | None = None) -> dict[str, Any]:
    """The cache stats as `tenant` sees them (its own), or as the tests' key sees them."""
    headers = tenant.auth if tenant else {}
    response = await client.get("/v1/admin/cache/stats", headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_semantic_ready(client: httpx.AsyncClient, timeout: float = 120) -> None:
    async with asyncio.timeout(timeout):
        while not (await stats(client))["semantic"]["ready"]:
            await asyncio.sleep(0.2)


async def wait_indexed(
    client: httpx.AsyncClient, tenant: Tenant, count: int = 1, timeout: float = 10
) -> float:
    """Seconds until this API's L2 index holds `count` entries of `tenant`."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while (await stats(client, tenant))["layers"]["semantic"]["entries"] < count:
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def texts_of_sse(
    client: httpx.AsyncClient, tenant: Tenant, job_id: str
) -> tuple[list[str], str]:
    scoped = httpx.AsyncClient(base_url=client.base_url, headers=tenant.auth, timeout=60)
    async with scoped:
        events = await read_sse(scoped, job_id)
    assert events[-1]["type"] == "end"
    assert [e["seq"] for e in events] == list(range(len(events)))
    return [e["text"] for e in events if e["type"] == "token"], events[-1]["finish_reason"]
