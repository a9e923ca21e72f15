"""HTTP: the model registry (`/v1/admin/models`), its traffic policies, and the pools'
circuit breakers (`/v1/admin/breakers`). Every route needs the `operator` scope: the registry
and the pools are the deployment's, shared by every tenant, so a tenant's `admin` key (which
any tenant can mint for itself) must not reroute or reset them for the others.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.deps import SessionDep, StateDep
from inferq.api.state import AppState
from inferq.auth.principal import OperatorAuth
from inferq.errors import ModelNotFound, NotFound
from inferq.queue.registry import registry_view
from inferq.registry import admin, policies, repository, stats
from inferq.registry.admin import PolicyCreate, VersionCreate, version_view
from inferq.registry.routing import pools_of
from inferq.registry.service import ModelRegistry, model_registry

router = APIRouter(prefix="/v1/admin/models", tags=["admin"], dependencies=[OperatorAuth])
breakers_router = APIRouter(
    prefix="/v1/admin/breakers", tags=["admin"], dependencies=[OperatorAuth]
)


class CanaryStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: float | None = Field(default=None, ge=0.0, le=100.0, description="Go to this.")
    step: float = Field(default=10.0, gt=0.0, le=100.0, description="Else raise by this.")


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: float = Field(ge=0.0, le=1.0)


class Stop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    promote: bool = Field(default=False, description="Make the candidate the active version.")


def _registry(state: AppState) -> ModelRegistry:
    return model_registry(state.settings, state.redis, state.sessions)


@router.get("")
async def list_models(state: StateDep, session: SessionDep) -> dict[str, Any]:
    await _registry(state).snapshot()  # seeds a fresh database
    rows = await repository.list_versions(session)
    return {"object": "list", "data": [version_view(r) for r in rows]}


@router.post("", status_code=201)
async def register(body: VersionCreate, state: StateDep, session: SessionDep) -> dict[str, Any]:
    await _registry(state).snapshot()
    row = await admin.register(session, body)
    await session.commit()
    await _registry(state).changed()
    return version_view(row)


@router.get("/{name}")
async def get_model(name: str, state: StateDep, session: SessionDep) -> dict[str, Any]:
    """A model's versions, its running policy and the live pools of each version."""
    await _registry(state).snapshot()
    rows = await repository.list_versions(session, name)
    if not rows:
        raise ModelNotFound(f"The model '{name}' is not in the registry.", param="name")
    workers = await registry_view(state.redis).workers()
    running = await repository.running_policy(session, name)
    versions = []
    for row in rows:
        pools = pools_of(workers, row.engine, row.name, row.version).values()
        live = [{"queue": p.queue, "pool": p.pool, "workers": p.workers, "slots": p.slots,
                 "slots_busy": p.busy, "adapters": sorted(p.adapters)} for p in pools]  # fmt: skip
        versions.append({**version_view(row), "pools": live})
    policy = policies.view(running) if running else None
    return {"object": "model", "name": name, "versions": versions, "policy": policy}


@router.get("/{name}/versions/{version}")
async def get_version(name: str, version: str, session: SessionDep) -> dict[str, Any]:
    return version_view(await admin.require_version(session, name, version))


@router.post("/{name}/versions/{version}/activate")
async def activate(name: str, version: str, state: StateDep, session: SessionDep) -> dict[str, Any]:
    """New jobs use this version at once; jobs already queued or running finish where they are."""
    row = await admin.activate(session, name, version)
    await session.commit()
    await _registry(state).changed()
    return version_view(row)


@router.post("/{name}/versions/{version}/retire")
async def retire(name: str, version: str, state: StateDep, session: SessionDep) -> dict[str, Any]:
    row = await admin.retire(session, name, version)
    await session.commit()
    await _registry(state).changed()
    return version_view(row)


@router.get("/{name}/policies")
async def list_policies(name: str, session: SessionDep) -> dict[str, Any]:
    rows = await repository.list_policies(session, name)
    return {"object": "list", "data": [policies.view(p) for p in rows]}


@router.post("/{name}/policies", status_code=201)
async def start_policy(
    name: str, body: PolicyCreate, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """Start an A/B test, a canary or a blue-green rollout (one running policy per model)."""
    policy = await admin.start_policy(session, name, body)
    await session.commit()
    await _registry(state).changed()
    return policies.view(policy)


@router.get("/{name}/policies/{policy_id}")
async def get_policy(name: str, policy_id: str, session: SessionDep) -> dict[str, Any]:
    return policies.view(await admin.require_policy(session, name, policy_id))


@router.get("/{name}/policies/{policy_id}/summary")
async def policy_summary(name: str, policy_id: str, session: SessionDep) -> dict[str, Any]:
    """Per-arm requests, errors, TTFT/TPOT percentiles, tokens; arms compared with 95 % CIs."""
    policy = await admin.require_policy(session, name, policy_id)
    return await stats.summary(session, policy)


@router.post("/{name}/policies/{policy_id}/step")
async def canary_step(
    name: str, policy_id: str, body: CanaryStep, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    policy = await admin.require_policy(session, name, policy_id)
    policies.canary_step(policy, body.percent, body.step)
    return await _saved(state, session, policy)


@router.post("/{name}/policies/{policy_id}/split")
async def ab_split(
    name: str, policy_id: str, body: Split, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    policy = await admin.require_policy(session, name, policy_id)
    policies.set_split(policy, body.share)
    return await _saved(state, session, policy)


@router.post("/{name}/policies/{policy_id}/switch")
async def blue_green_switch(
    name: str, policy_id: str, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """Blue-green: every new job goes to green (the candidate) at once."""
    policy = await admin.require_policy(session, name, policy_id)
    policies.switch(policy, to_candidate=True)
    return await _saved(state, session, policy)


@router.post("/{name}/policies/{policy_id}/rollback")
async def blue_green_rollback(
    name: str, policy_id: str, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """Blue-green: every new job goes back to blue (the control) at once."""
    policy = await admin.require_policy(session, name, policy_id)
    policies.switch(policy, to_candidate=False)
    return await _saved(state, session, policy)


@router.post("/{name}/policies/{policy_id}/stop")
async def stop_policy(
    name: str, policy_id: str, state: StateDep, session: SessionDep, body: Stop | None = None
) -> dict[str, Any]:
    policy = await admin.require_policy(session, name, policy_id)
    await admin.stop_policy(session, policy, promote=body.promote if body else False)
    return await _saved(state, session, policy)


async def _saved(state: AppState, session: SessionDep, policy: Any) -> dict[str, Any]:
    await session.commit()
    await _registry(state).changed()
    return policies.view(policy)


@breakers_router.get("")
async def list_breakers(state: StateDep) -> dict[str, Any]:
    """Every live pool's breaker, and every pool with a breaker record."""
    breakers = _registry(state).breakers
    known = {b["pool"]: b for b in await breakers.all()}
    for queue in await _live_queues(state) - set(known):
        known[queue] = await breakers.describe(queue)
    return {"object": "list", "data": [known[q] for q in sorted(known)]}


@breakers_router.post("/{pool:path}/reset")
async def reset_breaker(pool: str, state: StateDep) -> dict[str, Any]:
    breakers = _registry(state).breakers
    if not await breakers.reset(pool) and pool not in await _live_queues(state):
        raise NotFound(
            f"No pool '{pool}': it has no breaker record and no live worker.",
            param="pool",
            code="pool_not_found",
        )
    return await breakers.describe(pool)


async def _live_queues(state: AppState) -> set[str]:
    workers = await registry_view(state.redis).workers()
    return {str(w["queue"]) for w in workers if w.get("queue")}
