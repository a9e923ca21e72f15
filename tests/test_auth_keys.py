"""API keys against the real API: missing, malformed, unknown, revoked, expired; scopes; the
admin API creates (shown once), lists (prefixes only) and revokes keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from inferq.auth import keys
from tests.auth_helpers import bearer, create_key, create_tenant
from tests.conftest import AUTH, _pg_dsn

JOB = {"model": "echo", "prompt": "hello", "max_tokens": 1}


async def _status(stack: str, headers: dict[str, str], path: str = "/v1/jobs") -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack, timeout=30) as c:
        return await c.get(path, headers=headers)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
        ({"Authorization": "Bearer not-a-key"}, "invalid_api_key"),
        ({"Authorization": "Bearer iq_short_x"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {keys.generate_key().plaintext}"}, "invalid_api_key"),
        ({"x-api-key": keys.generate_key().plaintext}, "invalid_api_key"),
    ],
)
async def test_bad_credentials_are_401_in_the_openai_shape(
    stack: str, headers: dict[str, str], code: str
) -> None:
    response = await _status(stack, headers)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"


async def test_every_surface_needs_a_credential(stack: str) -> None:
    async with httpx.AsyncClient(base_url=stack, timeout=30) as c:
        for method, path in [
            ("POST", "/v1/jobs"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
            ("GET", "/v1/sessions"), ("POST", "/api/generate"), ("GET", "/api/tags"),
            ("GET", "/v1/admin/cache/stats"), ("GET", "/v1/admin/keys"), ("GET", "/v1/workers"),
        ]:  # fmt: skip
            response = await c.request(method, path, json=JOB)
            assert response.status_code == 401, (path, response.text)
        assert (await c.get("/health")).status_code == 200  # probes stay open


async def test_revoked_and_expired_keys_are_refused(stack: str) -> None:
    tenant_id, _ = await create_tenant(_pg_dsn(), f"keys-{uuid.uuid4().hex[:8]}")
    past = datetime.now(UTC) - timedelta(minutes=1)
    revoked = await create_key(_pg_dsn(), tenant_id, revoked_at=past)
    expired = await create_key(_pg_dsn(), tenant_id, expires_at=past)
    live = await create_key(_pg_dsn(), tenant_id, expires_at=past + timedelta(days=1))
    assert (await _status(stack, bearer(revoked))).json()["error"]["code"] == "revoked_api_key"
    assert (await _status(stack, bearer(expired))).json()["error"]["code"] == "expired_api_key"
    assert (await _status(stack, bearer(live))).status_code == 200
    assert (await _status(stack, {"x-api-key": live})).status_code == 200
    # A key with one character changed is another key.
    tampered = live[:-1] + ("A" if live[-1] != "A" else "B")
    assert (await _status(stack, bearer(tampered))).status_code == 401


async def test_inference_scope_cannot_use_admin_routes(stack: str) -> None:
    tenant_id, _ = await create_tenant(_pg_dsn(), f"scope-{uuid.uuid4().hex[:8]}")
    key = await create_key(_pg_dsn(), tenant_id, ("inference",))
    for path in ("/v1/admin/keys", "/v1/admin/cache/stats", "/v1/admin/tenant"):
        response = await _status(stack, bearer(key), path)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "insufficient_scope"
    assert (await _status(stack, bearer(key))).status_code == 200


async def test_admin_api_creates_lists_and_revokes_keys(stack: str, db: object) -> None:
    async with httpx.AsyncClient(base_url=stack, timeout=30, headers=AUTH) as c:
        created = await c.post("/v1/admin/keys", json={"name": "ci", "expires_in_s": 3600})
        assert created.status_code == 201, created.text
        body = created.json()
        plaintext = body["key"]
        assert plaintext.startswith(body["prefix"]) and body["scopes"] == ["inference"]
        listed = (await c.get("/v1/admin/keys")).json()["data"]
        mine = [k for k in listed if k["id"] == body["id"]]
        assert mine and "key" not in mine[0]  # shown once: never in a listing
        assert (await _status(stack, bearer(plaintext))).status_code == 200
        assert (await c.delete(f"/v1/admin/keys/{body['id']}")).status_code == 204
        assert (await c.delete(f"/v1/admin/keys/{body['id']}")).status_code == 404
        bad = await c.post("/v1/admin/keys", json={"scopes": ["root"]})
        assert bad.status_code == 422
    assert (await _status(stack, bearer(plaintext))).json()["error"]["code"] == "revoked_api_key"
    # Stored only as a hash: the plaintext is nowhere in the table.
    conn = db
    rows = await conn.fetch("SELECT prefix, secret_hash FROM api_keys")  # type: ignore[attr-defined]
    assert all(plaintext not in (r["prefix"] + r["secret_hash"]) for r in rows)
    assert any(r["secret_hash"] == keys.hash_key(plaintext) for r in rows)


def test_key_format_and_hash() -> None:
    new = keys.generate_key()
    assert keys.prefix_of(new.plaintext) == new.prefix
    assert keys.matches(new.plaintext, new.secret_hash)
    assert not keys.matches(new.plaintext + "x", new.secret_hash)
    assert keys.prefix_of("iq_" + new.prefix) is None


async def test_a_key_is_revoked_by_the_prefix_keys_list_shows(settings_env: None) -> None:
    """`inferq keys list` prints `iq_<prefix>_…`; revoking by that said "no such active key"."""
    from inferq.auth import service
    from inferq.db.session import make_engine, make_sessionmaker
    from inferq.settings import get_settings

    tenant_id, _ = await create_tenant(_pg_dsn(), f"revoke-{uuid.uuid4().hex[:8]}")
    engine = make_engine(get_settings())
    try:
        for shown in ("iq_{}_…", "iq_{}_", "iq_{}", "{}"):
            plaintext = await create_key(_pg_dsn(), tenant_id)
            prefix = keys.prefix_of(plaintext)
            async with make_sessionmaker(engine)() as db:
                assert await service.revoke_key(db, shown.format(prefix), None), shown
                await db.commit()
                assert not await service.key_is_live(db, plaintext)
    finally:
        await engine.dispose()
