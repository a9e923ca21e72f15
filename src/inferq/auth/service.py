"""Tenants and API keys: create, find, list, revoke. Shared by the CLI and the admin API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.auth import keys, signing
from inferq.auth.models import ApiKey, Tenant
from inferq.auth.principal import SCOPES
from inferq.errors import InvalidValue
from inferq.settings import Settings

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    plaintext: str  # shown once


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise InvalidValue("tenant: 1-64 characters of a-z, 0-9, '-', '_' or '.'", param="tenant")
    return name


async def find_tenant(db: AsyncSession, name: str) -> Tenant | None:
    return (await db.scalars(select(Tenant).where(Tenant.name == name))).one_or_none()


async def ensure_tenant(
    db: AsyncSession, settings: Settings, name: str, tier: str | None = None
) -> Tenant:
    """The tenant called `name`, created (with `tier`, default the configured one) if new."""
    check_name(name)
    requested, tier = tier, tier or settings.default_tier
    if tier not in settings.tiers:
        raise InvalidValue(f"tier: one of {', '.join(sorted(settings.tiers))}", param="tier")
    tenant = await find_tenant(db, name)
    if tenant is None:
        tenant = Tenant(id=uuid.uuid4(), name=name, tier=tier, webhook_secret=signing.new_secret())
        db.add(tenant)
        await db.flush()
    elif requested is not None and tenant.tier != requested:
        tenant.tier = requested
    return tenant


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidValue(f"scopes: a non-empty subset of {', '.join(SCOPES)}", param="scopes")
    return sorted(set(scopes))


async def create_key(
    db: AsyncSession,
    tenant: Tenant,
    *,
    scopes: list[str],
    expires_at: datetime | None = None,
    name: str | None = None,
    limits: tuple[int | None, int | None, int | None] = (None, None, None),
) -> CreatedKey:
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidValue("expires_at: must be in the future", param="expires_at")
    new = keys.generate_key()
    key = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        prefix=new.prefix,
        secret_hash=new.secret_hash,
        name=name,
        scopes=check_scopes(scopes),
        expires_at=expires_at,
        requests_per_minute=limits[0],
        tokens_per_minute=limits[1],
        max_concurrent=limits[2],
        created_at=datetime.now(UTC),
    )
    db.add(key)
    await db.flush()
    return CreatedKey(key, new.plaintext)


async def list_keys(db: AsyncSession, tenant_id: uuid.UUID) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
    return list((await db.scalars(query)).all())


async def revoke_key(db: AsyncSession, key_ref: str, tenant_id: uuid.UUID | None) -> bool:
    """Revoke by id, by the whole key, or by its prefix as `inferq keys list` shows it
    (`iq_7t2qxj89u2r8_…`, with or without the `iq_` and the tail); with `tenant_id`, only
    that tenant's keys."""
    try:
        match = ApiKey.id == uuid.UUID(key_ref)
    except ValueError:
        shown = key_ref.removesuffix("…").removesuffix("_").removeprefix(keys.KEY_PREFIX)
        match = ApiKey.prefix == (keys.prefix_of(key_ref) or shown)
    query = update(ApiKey).where(match, ApiKey.revoked_at.is_(None))
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    result = await db.execute(query.values(revoked_at=datetime.now(UTC)))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def key_is_live(db: AsyncSession, plaintext: str) -> bool:
    """True when this plaintext key exists, matches, and is neither revoked nor expired."""
    prefix = keys.prefix_of(plaintext)
    if prefix is None:
        return False
    key = (await db.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).one_or_none()
    return (
        key is not None
        and keys.matches(plaintext, key.secret_hash)
        and key.revoked_at is None
        and (key.expires_at is None or key.expires_at > datetime.now(UTC))
    )
