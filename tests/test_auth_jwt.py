"""JWT bearer tokens: the algorithm comes from configuration, never from the token.

Unit tests drive `inferq.auth.jwt.verify` with real keys; one test runs a second API
process configured for RS256 and calls it with real tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from inferq.auth import jwt as jwt_auth
from inferq.auth.errors import Unauthenticated
from inferq.settings import Settings
from tests.auth_helpers import bearer, create_tenant
from tests.conftest import API_PORT, _pg_dsn
from tests.stack import Proc, inferq_argv, wait_http

AUD, ISS = "inferq", "https://issuer.test"


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder = tmp_path_factory.mktemp("jwt")
    pem = folder / "public.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    return key, pem, jwks


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {"sub": "u1", "tenant": "acme", "aud": AUD, "iss": ISS, "exp": time.time() + 300}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(key, head.encode(), hashlib.sha256).digest() if key else b""
    return head + "." + _b64(signature)


def _rs(pem: Path, **kw: Any) -> Settings:
    return Settings(jwt_algorithm="RS256", jwt_public_key_file=pem, jwt_issuer=ISS, **kw)


def _hs(**kw: Any) -> Settings:
    return Settings(jwt_algorithm="HS256", jwt_secret="s" * 32, jwt_issuer=ISS, **kw)


def test_valid_tokens_give_the_tenant_claim(rsa_key: Any) -> None:
    key, pem, jwks = rsa_key
    token = jwt.encode(_claims(scope="inference admin"), key, algorithm="RS256")
    claims = jwt_auth.verify(_rs(pem), token)
    assert claims.tenant == "acme" and claims.scopes == {"inference", "admin"}
    by_kid = jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"})
    jwks_settings = Settings(jwt_algorithm="RS256", jwt_jwks_file=jwks, jwt_issuer=ISS)
    assert jwt_auth.verify(jwks_settings, by_kid).tenant == "acme"
    hs = jwt.encode(_claims(), "s" * 32, algorithm="HS256")
    assert jwt_auth.verify(_hs(), hs).scopes == {"inference"}


def test_alg_none_is_refused(rsa_key: Any) -> None:
    _, pem, _ = rsa_key
    token = _hand_made({"alg": "none", "typ": "JWT"}, _claims(), None)
    for settings in (_rs(pem), _hs()):
        with pytest.raises(Unauthenticated):
            jwt_auth.verify(settings, token)


def test_hs256_signed_with_the_rs256_public_key_is_refused(rsa_key: Any) -> None:
    _, pem, _ = rsa_key
    token = _hand_made({"alg": "HS256", "typ": "JWT"}, _claims(), pem.read_bytes())
    with pytest.raises(Unauthenticated):
        jwt_auth.verify(_rs(pem), token)


@pytest.mark.parametrize(
    "claims",
    [
        _claims(exp=time.time() - 3600),  # expired
        _claims(exp=None),  # no exp
        _claims(aud="someone-else"),
        _claims(aud=None),
        _claims(iss="https://evil.test"),
        _claims(tenant=None),
        _claims(nbf=time.time() + 3600),  # not yet valid
    ],
    ids=["expired", "no-exp", "wrong-aud", "no-aud", "wrong-iss", "no-tenant", "nbf"],
)
def test_bad_claims_are_refused(rsa_key: Any, claims: dict[str, Any]) -> None:
    key, pem, _ = rsa_key
    with pytest.raises(Unauthenticated):
        jwt_auth.verify(_rs(pem), jwt.encode(claims, key, algorithm="RS256"))


def test_another_key_or_a_tampered_token_is_refused(rsa_key: Any) -> None:
    _, pem, _ = rsa_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated):
        jwt_auth.verify(_rs(pem), jwt.encode(_claims(), other, algorithm="RS256"))
    hs = jwt.encode(_claims(), "s" * 32, algorithm="HS256")
    head, _body, sig = hs.split(".")
    forged = _b64(json.dumps(_claims(tenant="other")).encode())
    with pytest.raises(Unauthenticated):
        jwt_auth.verify(_hs(), f"{head}.{forged}.{sig}")
    with pytest.raises(Unauthenticated):  # JWT not configured at all
        jwt_auth.verify(Settings(), hs)


@pytest.fixture(scope="module")
def jwt_api(stack: str, rsa_key: Any) -> Iterator[str]:
    _, pem, _ = rsa_key
    port = API_PORT + 1
    env = {"INFERQ_API_PORT": str(port), "INFERQ_JWT_ALGORITHM": "RS256",
           "INFERQ_JWT_PUBLIC_KEY_FILE": str(pem), "INFERQ_JWT_ISSUER": ISS}  # fmt: skip
    proc = Proc("api-jwt", inferq_argv("api"), env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def test_the_api_accepts_rs256_and_refuses_forgeries(jwt_api: str, rsa_key: Any) -> None:
    key, pem, _ = rsa_key
    tenant = f"jwt-{uuid.uuid4().hex[:8]}"
    await create_tenant(_pg_dsn(), tenant)
    good = jwt.encode(_claims(tenant=tenant), key, algorithm="RS256")
    none = _hand_made({"alg": "none"}, _claims(tenant=tenant), None)
    confused = _hand_made({"alg": "HS256"}, _claims(tenant=tenant), pem.read_bytes())
    expired = jwt.encode(_claims(tenant=tenant, exp=time.time() - 120), key, algorithm="RS256")
    unknown = jwt.encode(_claims(tenant="no-such-tenant"), key, algorithm="RS256")
    async with httpx.AsyncClient(base_url=jwt_api, timeout=30) as c:
        ok = await c.post(
            "/v1/jobs",
            json={"model": "echo", "prompt": "hi", "max_tokens": 1},
            headers=bearer(good),
        )
        assert ok.status_code == 202, ok.text
        for token in (none, confused, expired, unknown):
            response = await c.get("/v1/jobs", headers=bearer(token))
            assert response.status_code == 401, response.text
        admin = await c.get("/v1/admin/keys", headers=bearer(good))
        assert admin.status_code == 403  # scopes come from the token: inference only
