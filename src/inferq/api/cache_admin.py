"""Cache administration: entries and hit rates per layer, and purges per tenant or model.

The app mounts this router behind the `admin` scope. A tenant's admin key sees and purges
its own tenant only; with INFERQ_AUTH=off (development) every tenant is in reach.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inferq.api.deps import StateDep
from inferq.auth.principal import current_principal
from inferq.errors import InvalidRequest

router = APIRouter(prefix="/v1/admin/cache", tags=["admin"])


@router.get("/stats")
async def stats(state: StateDep, tenant: str | None = None) -> dict[str, Any]:
    """Per layer: entries, hits, misses and hit rate, for `tenant` or all tenants.

    L1 entries are counted in Redis (shared); L2 entries are this process's index.
    """
    tenant = _scoped(tenant)
    cache = state.cache
    return {
        "object": "cache.stats",
        "tenant": tenant,
        "layers": await cache.store.stats(tenant),
        "semantic": {
            "ready": cache.embedder is not None and cache.embedder.ready,
            "threshold": state.settings.cache_semantic_threshold,
            "indexed": len(cache.index),
            "training": cache.index.training,  # partitions whose cells are being (re)built
        },
    }


@router.delete("")
async def purge(
    state: StateDep, tenant: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """Forget every cached answer of a tenant, of a model, or of a model within a tenant."""
    tenant = _scoped(tenant or None)
    if not tenant and not model:
        raise InvalidRequest(
            "Name a tenant, a model or both to purge.", param="tenant", code="missing_scope"
        )
    removed = await state.cache.store.purge(tenant or None, model or None)
    return {"object": "cache.purge", "tenant": tenant, "model": model, "removed": removed}


def _scoped(tenant: str | None) -> str | None:
    """The tenant a caller may act on: its own, whatever it asked for, when it has one."""
    principal = current_principal()
    if principal.tenant_id is None:
        return tenant
    if tenant is not None and tenant != principal.tenant_name:
        raise InvalidRequest(
            "A tenant's key can only see and purge its own tenant's cache.",
            param="tenant",
            code="tenant_out_of_scope",
        )
    return principal.tenant_name
