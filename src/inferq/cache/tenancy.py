"""Who is asking, and which model version answers: the two scopes of every cache key.

Authentication (inferq.auth.principal.bind) sets `tenant_var` to the caller's tenant name
for every request; with INFERQ_AUTH=off (development only) it stays "default".
"""

from __future__ import annotations

from contextvars import ContextVar

from inferq.catalog import ModelSpec

DEFAULT_TENANT = "default"

tenant_var: ContextVar[str] = ContextVar("inferq_tenant", default=DEFAULT_TENANT)


def current_tenant() -> str:
    """The tenant of the request being served (the one place every cache scope comes from)."""
    return tenant_var.get()


def model_version(spec: ModelSpec) -> str:
    """The model a cached answer belongs to (the key segment a purge selects by name).

    The registry's version of that model (the route's `model_version`) is hashed into the
    key with the parameters by `job_service._cache_lookup`, so a new version never serves
    an old version's answers.
    """
    return spec.name
