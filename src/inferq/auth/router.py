"""HTTP: the admin API (`/v1/admin/*`, scope `admin`, always the caller's own tenant) and
the signed inbound webhook that submits a job (`POST /v1/webhooks/ingest`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service
from inferq.api.deps import SessionDep, StateDep
from inferq.api.schemas import JobCreate
from inferq.auth import principal as auth
from inferq.auth import service, signing, webhooks
from inferq.auth.errors import Forbidden, RateLimited, Unauthenticated
from inferq.auth.models import ApiKey, Tenant
from inferq.errors import InferqError, InvalidRequest, NotFound, ServiceUnavailable
from inferq.queue.names import webhook_seen_key

admin_router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[auth.AdminAuth])
ingest_router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    scopes: list[str] = Field(default_factory=lambda: ["inference"], max_length=4)
    expires_in_s: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)
    requests_per_minute: int | None = Field(default=None, ge=1, le=10**9)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=10**12)
    max_concurrent: int | None = Field(default=None, ge=1, le=10**6)


class KeyView(BaseModel):
    id: str
    object: str = "api_key"
    prefix: str
    name: str | None
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyView:
        return cls(
            id=str(key.id),
            prefix=f"iq_{key.prefix}_",
            name=key.name,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyView):
    key: str = Field(description="The whole key; shown this once, never again.")


def _tenant_id(principal: auth.Principal) -> uuid.UUID:
    if principal.tenant_id is None:  # auth off: there is no tenant to administer
        raise InvalidRequest("Authentication is off; manage keys with `inferq keys`.")
    return principal.tenant_id


@admin_router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, principal: auth.AdminDep, db: SessionDep) -> KeyCreated:
    beyond = sorted(set(body.scopes) & set(auth.SCOPES) - principal.scopes)
    if beyond:  # a tenant's admin must not mint itself the deployment's `operator` scope
        raise Forbidden(f"A key cannot have a scope its creator lacks: {', '.join(beyond)}.")
    tenant = await db.get(Tenant, _tenant_id(principal))
    assert tenant is not None
    expires = (
        datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    )
    limits = (body.requests_per_minute, body.tokens_per_minute, body.max_concurrent)
    created = await service.create_key(
        db, tenant, scopes=body.scopes, expires_at=expires, name=body.name, limits=limits
    )
    await db.commit()
    return KeyCreated(**KeyView.of(created.key).model_dump(), key=created.plaintext)


@admin_router.get("/keys")
async def list_keys(principal: auth.AdminDep, db: SessionDep) -> dict[str, Any]:
    keys = await service.list_keys(db, _tenant_id(principal))
    return {"object": "list", "data": [KeyView.of(k).model_dump(mode="json") for k in keys]}


@admin_router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(
    key_id: str, principal: auth.AdminDep, db: SessionDep, state: StateDep
) -> Response:
    if not await service.revoke_key(db, key_id, _tenant_id(principal)):
        raise NotFound(f"No active key '{key_id}'.", param="key_id")
    await db.commit()
    state.verified_keys.clear()  # this process refuses the key at once
    return Response(status_code=204)


@admin_router.get("/tenant")
async def tenant_info(principal: auth.AdminDep, db: SessionDep) -> dict[str, Any]:
    """The caller's tenant, its tier's limits and its webhook signing secret."""
    tenant = await db.get(Tenant, _tenant_id(principal))
    assert tenant is not None
    return {
        "object": "tenant",
        "id": str(tenant.id),
        "name": tenant.name,
        "tier": principal.tier_name,
        "limits": principal.tier.model_dump(),
        "webhook_secret": tenant.webhook_secret,
    }


@admin_router.get("/webhooks/deliveries")
async def deliveries(job_id: str, principal: auth.AdminDep, db: SessionDep) -> dict[str, Any]:
    """Every delivery of a job's webhook, each with the log of its tries."""
    job = await job_service.load_job(db, job_id)
    rows = await webhooks.deliveries_of(db, job.id)
    data = [
        {
            "id": d.id,
            "url": d.url,
            "status": d.status,
            "attempts": d.attempts,
            "last_status_code": d.last_status_code,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
            "log": d.log,
        }
        for d in rows
    ]
    return {"object": "list", "data": data}


class WebhookReplayed(InferqError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "webhook_replayed"


@ingest_router.post("/ingest", status_code=202)
async def ingest(tenant: str, request: Request, state: StateDep, db: SessionDep) -> dict[str, Any]:
    """Submit a job from a signed webhook (Standard Webhooks, the tenant's webhook secret).

    The body is a job (as `POST /v1/jobs`). Refused: a bad or missing signature (401), a
    timestamp more than INFERQ_WEBHOOK_TOLERANCE_S away (401), a webhook-id already seen (409).
    """
    body = await request.body()
    principal = await _verified(state, db, tenant, request, body)
    webhook_id = request.headers["webhook-id"]
    seen = webhook_seen_key(f"{principal.tenant_id}:{webhook_id}")
    ttl = state.settings.webhook_tolerance_s * 2  # older copies fail the timestamp check
    if not await state.redis.set(seen, "1", nx=True, ex=ttl):
        raise WebhookReplayed(f"Webhook '{webhook_id[:100]}' was already processed.")
    try:
        job_body = JobCreate.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(
            f"The webhook body is not a valid job: {exc.errors()[0]['msg']}."
        ) from None
    auth.bind(principal)
    try:
        job = await job_service.submit_job(state, db, job_body)
    except (ServiceUnavailable, RateLimited):
        await state.redis.delete(seen)  # a retry of this same message may succeed later
        raise
    return {"id": str(job.id), "object": "job", "status": job.status, "webhook_id": webhook_id}


async def _verified(
    state: Any, db: AsyncSession, tenant_name: str, request: Request, body: bytes
) -> auth.Principal:
    tenant = await service.find_tenant(db, tenant_name[:64])
    secret = tenant.webhook_secret if tenant else signing.new_secret()  # same work either way
    headers = {k: request.headers.get(k, "") for k in signing.HEADERS}
    try:
        signing.verify(secret, headers, body, state.settings.webhook_tolerance_s)
    except signing.BadSignature as exc:
        raise Unauthenticated(f"Webhook rejected: {exc}.", code="invalid_signature") from None
    if tenant is None or tenant.disabled_at is not None:
        raise Unauthenticated("Webhook rejected: no signature matches.", code="invalid_signature")
    return auth.principal_of_tenant(state.settings, tenant, frozenset({"inference"}))
