"""Tenant isolation: tenant B gets 404 for tenant A's job (read, stream, cancel), session and
cache entries, and for A's job over the WebSocket; a socket without credentials or from a
foreign Origin gets nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.auth_helpers import bearer, tenant_with_key
from tests.conftest import AUTH, _pg_dsn, wait_final


async def _pair(stack: str) -> tuple[httpx.AsyncClient, httpx.AsyncClient, str, str]:
    tag = uuid.uuid4().hex[:8]
    key_a = await tenant_with_key(_pg_dsn(), f"a-{tag}")
    key_b = await tenant_with_key(_pg_dsn(), f"b-{tag}")
    a = httpx.AsyncClient(base_url=stack, timeout=30, headers=bearer(key_a))
    b = httpx.AsyncClient(base_url=stack, timeout=30, headers=bearer(key_b))
    return a, b, key_a, key_b


def _ws(stack: str) -> str:
    return stack.replace("http://", "ws://") + "/v1/ws"


async def test_another_tenants_job_is_404_everywhere(stack: str) -> None:
    a, b, _, _ = await _pair(stack)
    async with a, b:
        submitted = await a.post("/v1/jobs", json={"model": "echo", "prompt": "x", "max_tokens": 3})
        job_id = submitted.json()["id"]
        for method, path in [
            ("GET", f"/v1/jobs/{job_id}"),
            ("GET", f"/v1/jobs/{job_id}/events"),
            ("POST", f"/v1/jobs/{job_id}/cancel"),
        ]:
            response = await b.request(method, path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "job_not_found"
        assert job_id not in {j["id"] for j in (await b.get("/v1/jobs")).json()["data"]}
        assert job_id in {j["id"] for j in (await a.get("/v1/jobs")).json()["data"]}
        assert (await wait_final(a, job_id))["status"] == "completed"  # B's cancel did nothing


async def test_another_tenants_session_is_404(stack: str) -> None:
    a, b, _, _ = await _pair(stack)
    async with a, b:
        created = await a.post("/v1/sessions", json={"model": "echo", "title": "secret plans"})
        sid = created.json()["id"]
        assert (await b.get(f"/v1/sessions/{sid}")).status_code == 404
        assert (await b.get(f"/v1/sessions/{sid}/export")).status_code == 404
        assert (await b.patch(f"/v1/sessions/{sid}", json={"title": "mine"})).status_code == 404
        assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 404
        assert sid not in {s["id"] for s in (await b.get("/v1/sessions")).json()["data"]}
        assert (await a.get(f"/v1/sessions/{sid}")).json()["title"] == "secret plans"


async def test_cache_entries_do_not_cross_tenants(stack: str) -> None:
    a, b, _, _ = await _pair(stack)
    body = {"model": "echo", "prompt": f"cache me {uuid.uuid4()}", "max_tokens": 3,
            "temperature": 0.0, "cache": {"mode": "exact"}}  # fmt: skip
    async with a, b:
        first = (await a.post("/v1/jobs", json=body)).json()["id"]
        await wait_final(a, first)
        again = await a.post("/v1/jobs", json=body)
        assert (await wait_final(a, again.json()["id"]))["cache"] == "hit-exact"
        other = await b.post("/v1/jobs", json=body)
        assert (await wait_final(b, other.json()["id"]))["cache"] != "hit-exact"
        assert (await b.get(f"/v1/jobs/{first}")).status_code == 404


async def _recv(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def test_websocket_needs_valid_credentials(stack: str) -> None:
    async with connect(_ws(stack)) as ws:  # no credentials: nothing but `auth` is served
        await ws.send(json.dumps({"event": "stream_chat", "data": {"prompt": "hi"}}))
        assert (await _recv(ws))["data"]["code"] == "unauthorized"  # then the close
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "authentication required"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(_ws(stack), additional_headers=bearer("iq_bad_key")):
            pass
    assert refused.value.response.status_code == 403
    async with connect(_ws(stack)) as ws:  # a first `auth` message with a bad token
        await ws.send(json.dumps({"event": "auth", "data": {"token": "iq_nope"}}))
        assert (await _recv(ws))["data"]["code"] == "invalid_api_key"  # then the close
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "invalid credentials"


async def test_websocket_from_a_foreign_origin_is_refused(stack: str, api_key: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            _ws(stack),
            origin="https://evil.example",
            additional_headers=bearer(api_key),  # type: ignore[arg-type]
        ):
            pass
    assert refused.value.response.status_code == 403
    async with connect(_ws(stack), origin=stack, additional_headers=bearer(api_key)) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"event": "ping", "data": {}}))
        assert (await _recv(ws))["event"] == "pong"


async def test_websocket_tenant_b_cannot_resume_or_stop_a_job_of_a(stack: str) -> None:
    a, b, key_a, key_b = await _pair(stack)
    async with a, b:
        job_id = (
            await a.post("/v1/jobs", json={"model": "echo", "prompt": "x", "max_tokens": 30})
        ).json()["id"]
        async with connect(_ws(stack), subprotocols=["inferq.v1", f"bearer.{key_b}"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"event": "resume", "data": {"job_id": job_id}}))
            assert (await _recv(ws))["data"]["code"] == "job_not_found"
            await ws.send(json.dumps({"event": "stop", "data": {"job_id": job_id}}))
            assert (await _recv(ws))["data"]["code"] == "job_not_found"
        async with connect(_ws(stack)) as ws:  # A authenticates with a first message
            await ws.send(json.dumps({"event": "auth", "data": {"token": key_a}}))
            assert (await _recv(ws))["event"] == "authenticated"
            await ws.send(json.dumps({"event": "resume", "data": {"job_id": job_id}}))
            frames = [await _recv(ws)]
            while frames[-1]["event"] == "stream_token":
                frames.append(await _recv(ws))
            assert frames[-1]["event"] == "stream_end"
        assert (await wait_final(a, job_id))["status"] == "completed"


async def test_a_tenant_admin_cannot_change_what_every_tenant_shares(stack: str) -> None:
    """Any tenant can mint itself an `admin` key; with it, it could activate model versions,
    start canaries and reset breakers for everyone. That takes `operator` now."""
    key = await tenant_with_key(_pg_dsn(), f"admin-{uuid.uuid4().hex[:8]}")  # inference+admin
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=30) as tenant:
        for method, path in [
            ("GET", "/v1/admin/models"),
            ("POST", "/v1/admin/models/echo/versions/1.0.0/activate"),
            ("GET", "/v1/admin/breakers"),
            ("POST", "/v1/admin/breakers/inferq.echo.echo/reset"),
        ]:
            response = await tenant.request(method, path)
            assert response.status_code == 403, (path, response.text)
        minted = await tenant.post("/v1/admin/keys", json={"scopes": ["inference", "operator"]})
        assert minted.status_code == 403 and "operator" in minted.json()["error"]["message"]
        own = await tenant.post("/v1/admin/keys", json={"scopes": ["inference", "admin"]})
        assert own.status_code == 201  # its own tenant's keys stay its own business
    async with httpx.AsyncClient(base_url=stack, headers=AUTH, timeout=30) as operator:
        assert (await operator.get("/v1/admin/breakers")).status_code == 200
        unknown = await operator.post("/v1/admin/breakers/no-such-pool/reset")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "pool_not_found"
