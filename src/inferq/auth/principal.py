"""The caller: resolved once per request from `Authorization: Bearer <key or JWT>` (or
`x-api-key`) and carried in a context variable, as the request id is.

Routers do not change: `app.include_router(..., dependencies=[InferenceAuth])` resolves the
principal before the handler runs, and the services (`job_service`, the session queries, the
cache) read the tenant from here. Without a principal they refuse (`current_principal`), so
a route that forgot the dependency fails closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.auth import jwt as jwt_auth
from inferq.auth import keys
from inferq.auth.errors import Forbidden, Unauthenticated
from inferq.auth.models import ApiKey, Tenant
from inferq.auth.tiers import Tier
from inferq.cache.tenancy import tenant_var
from inferq.settings import Settings

if TYPE_CHECKING:
    from inferq.auth.verified import VerifiedKeys

# `admin` administers its own tenant (keys, cache, deliveries); `operator` the deployment,
# which every tenant shares (the model registry, the pools' circuit breakers).
SCOPES = ("inference", "admin", "operator")
DEFAULT_SCOPES = ("inference",)


@dataclass(frozen=True)
class Principal:
    """Who is asking. `tenant_id` is None only when authentication is off (development)."""

    tenant_id: uuid.UUID | None
    tenant_name: str
    tier_name: str
    tier: Tier
    scopes: frozenset[str]
    key_id: uuid.UUID | None = None
    key_limits: tuple[int | None, int | None, int | None] = (None, None, None)

    @property
    def subject(self) -> str:
        """The rate-limit identity of the credential: the key, else the tenant."""
        return str(self.key_id) if self.key_id else "tenant"


principal_var: ContextVar[Principal | None] = ContextVar("inferq_principal", default=None)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("Authentication required.", code="missing_api_key")
    return principal


def current_tenant_id() -> uuid.UUID | None:
    """The tenant every query of this request is scoped to (None: auth off, no scoping)."""
    return current_principal().tenant_id


def bind(principal: Principal) -> None:
    """Make `principal` the caller of the running task (and of the tasks it creates)."""
    principal_var.set(principal)
    tenant_var.set(principal.tenant_name)  # the scope of every cache key


def anonymous(settings: Settings) -> Principal:
    """The caller when INFERQ_AUTH=off (development only): every scope, no tenant scoping."""
    tier = settings.tiers[settings.default_tier]
    return Principal(None, "default", settings.default_tier, tier, frozenset(SCOPES))


def credential_of(headers: dict[str, str] | Request) -> str | None:
    """The bearer credential of a request's headers, if any (never logged)."""
    get = headers.headers.get if isinstance(headers, Request) else headers.get
    auth = get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None
    api_key = get("x-api-key")
    return api_key.strip() if api_key is not None else None


async def authenticate(settings: Settings, db: AsyncSession, credential: str | None) -> Principal:
    """The principal of a credential; Unauthenticated for a missing or invalid one."""
    if settings.auth == "off":
        return anonymous(settings)
    if credential is None:
        raise Unauthenticated(
            "Missing credentials: send 'Authorization: Bearer <API key or JWT>'.",
            code="missing_api_key",
        )
    if keys.looks_like_key(credential):
        return (await _from_key(settings, db, credential))[0]
    if jwt_auth.looks_like_jwt(credential):
        return await _from_jwt(settings, db, credential)
    raise Unauthenticated("Malformed credential: not an inferq API key nor a JWT.")


async def resolve_principal(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    verified: VerifiedKeys,
    credential: str | None,
) -> Principal:
    """`authenticate`, answered from the keys verified in the last few seconds when it can."""
    if settings.auth == "off" or credential is None or not keys.looks_like_key(credential):
        async with sessions() as db:
            return await authenticate(settings, db, credential)
    if (principal := verified.get(credential)) is not None:
        return principal
    async with sessions() as db:
        principal, expires_at = await _from_key(settings, db, credential)
    verified.put(credential, principal, expires_at)
    return principal


async def _from_key(
    settings: Settings, db: AsyncSession, credential: str
) -> tuple[Principal, datetime | None]:
    """The principal of an API key, and when the key expires."""
    prefix = keys.prefix_of(credential)
    if prefix is None:
        raise Unauthenticated("Malformed API key.")
    query = (
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.prefix == prefix)
    )
    row = (await db.execute(query)).one_or_none()
    # Hash the credential even when the prefix is unknown, so timing tells nothing.
    stored = row[0].secret_hash if row else "0" * 64
    if not keys.matches(credential, stored) or row is None:
        raise Unauthenticated("Incorrect API key provided.")
    key, tenant = row
    now = datetime.now(UTC)
    if key.revoked_at is not None:
        raise Unauthenticated("This API key has been revoked.", code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthenticated("This API key has expired.", code="expired_api_key")
    if tenant.disabled_at is not None:
        raise Unauthenticated("This tenant is disabled.", code="tenant_disabled")
    limits = (key.requests_per_minute, key.tokens_per_minute, key.max_concurrent)
    return _principal(settings, tenant, frozenset(key.scopes), key.id, limits), key.expires_at


async def _from_jwt(settings: Settings, db: AsyncSession, credential: str) -> Principal:
    claims = jwt_auth.verify(settings, credential)
    tenant = (await db.scalars(select(Tenant).where(Tenant.name == claims.tenant))).one_or_none()
    if tenant is None or tenant.disabled_at is not None:
        raise Unauthenticated("The token's tenant is unknown or disabled.", code="invalid_token")
    return _principal(settings, tenant, claims.scopes & frozenset(SCOPES), None, (None,) * 3)


def principal_of_tenant(settings: Settings, tenant: Tenant, scopes: frozenset[str]) -> Principal:
    """A tenant acting through something other than a key (a verified webhook)."""
    return _principal(settings, tenant, scopes, None, (None, None, None))


def _principal(
    settings: Settings,
    tenant: Tenant,
    scopes: frozenset[str],
    key_id: uuid.UUID | None,
    limits: tuple[int | None, int | None, int | None],
) -> Principal:
    tier_name = tenant.tier if tenant.tier in settings.tiers else settings.default_tier
    return Principal(
        tenant.id, tenant.name, tier_name, settings.tiers[tier_name], scopes, key_id, limits
    )


def _require(scope: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    async def dependency(request: Request) -> Principal:
        state = request.app.state.inferq
        principal = await resolve_principal(
            state.settings, state.sessions, state.verified_keys, credential_of(request)
        )
        if scope not in principal.scopes:
            raise Forbidden(f"This credential lacks the '{scope}' scope.")
        bind(principal)
        return principal

    return dependency


require_inference = _require("inference")
require_admin = _require("admin")
require_operator = _require("operator")
InferenceAuth = Depends(require_inference)
AdminAuth = Depends(require_admin)
OperatorAuth = Depends(require_operator)
TenantDep = Annotated[Principal, Depends(require_inference)]
AdminDep = Annotated[Principal, Depends(require_admin)]
