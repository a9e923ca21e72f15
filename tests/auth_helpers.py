"""Tenants and keys for tests, written straight to PostgreSQL (as `inferq keys create` does)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from inferq.auth import keys, signing


async def create_tenant(dsn: str, name: str, tier: str = "unlimited") -> tuple[uuid.UUID, str]:
    """(id, webhook secret) of the tenant `name`, created or re-tiered."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "INSERT INTO tenants (id, name, tier, webhook_secret) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (name) DO UPDATE SET tier = EXCLUDED.tier "
            "RETURNING id, webhook_secret",
            uuid.uuid4(),
            name,
            tier,
            signing.new_secret(),
        )
    finally:
        await conn.close()
    assert row is not None
    return row["id"], row["webhook_secret"]


async def create_key(
    dsn: str,
    tenant_id: uuid.UUID,
    scopes: tuple[str, ...] = ("inference", "admin"),
    *,
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
    limits: tuple[int | None, int | None, int | None] = (None, None, None),
) -> str:
    new = keys.generate_key()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, prefix, secret_hash, scopes, expires_at, "
            "revoked_at, requests_per_minute, tokens_per_minute, max_concurrent) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            uuid.uuid4(),
            tenant_id,
            new.prefix,
            new.secret_hash,
            list(scopes),
            expires_at,
            revoked_at,
            *limits,
        )
    finally:
        await conn.close()
    return new.plaintext


async def tenant_with_key(
    dsn: str, name: str, tier: str = "unlimited", scopes: tuple[str, ...] = ("inference", "admin")
) -> str:
    tenant_id, _ = await create_tenant(dsn, name, tier)
    return await create_key(dsn, tenant_id, scopes)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
