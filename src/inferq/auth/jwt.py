"""JWT bearer tokens: HS256 with a shared secret, or RS256 with a PEM public key or a JWKS.

The algorithm comes from configuration only: a token's `alg` header is never trusted, so
`none` and an HS256 token signed with the RS256 public key are both refused. `exp` is
required; `aud` and `iss` are checked; the tenant is read from a configured claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt as pyjwt
from jwt.algorithms import RSAAlgorithm

from inferq.auth.errors import Unauthenticated
from inferq.settings import Settings


@dataclass(frozen=True)
class Claims:
    subject: str | None
    tenant: str
    scopes: frozenset[str]


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("eyJ")


@lru_cache(maxsize=8)
def _pem(path: Path) -> str:
    return path.read_text()


@lru_cache(maxsize=8)
def _jwks(path: Path) -> dict[str, Any]:
    keys = json.loads(path.read_text()).get("keys", [])
    return {str(k.get("kid", "")): RSAAlgorithm.from_jwk(json.dumps(k)) for k in keys}


def _key(settings: Settings, token: str) -> Any:
    if settings.jwt_algorithm == "HS256":
        if not settings.jwt_secret:
            raise Unauthenticated("JWT is not configured on this server.")
        return settings.jwt_secret
    if settings.jwt_public_key_file is not None:
        return _pem(settings.jwt_public_key_file)
    if settings.jwt_jwks_file is not None:
        keys = _jwks(settings.jwt_jwks_file)
        kid = str(pyjwt.get_unverified_header(token).get("kid", ""))
        if kid in keys:
            return keys[kid]
        if len(keys) == 1 and not kid:
            return next(iter(keys.values()))
        raise Unauthenticated("The token's key id is not in the configured JWKS.")
    raise Unauthenticated("JWT is not configured on this server.")


def verify(settings: Settings, token: str) -> Claims:
    """The claims of a valid token; Unauthenticated for anything else."""
    if settings.jwt_algorithm is None:
        raise Unauthenticated("JWT bearer tokens are not accepted by this server.")
    try:
        claims = pyjwt.decode(
            token,
            _key(settings, token),
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "aud", *(["iss"] if settings.jwt_issuer else [])]},
        )
    except pyjwt.PyJWTError as exc:
        raise Unauthenticated(f"Invalid token: {exc}.", code="invalid_token") from None
    tenant = claims.get(settings.jwt_tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise Unauthenticated(
            f"The token has no '{settings.jwt_tenant_claim}' claim.", code="invalid_token"
        )
    return Claims(claims.get("sub"), tenant, _scopes(claims))


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scopes", "inference"))
    values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return frozenset(str(v) for v in values)
