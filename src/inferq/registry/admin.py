"""Registry changes shared by the admin API and the CLI: register, activate, retire, and the
traffic policies' lifecycle. Callers commit, then call `ModelRegistry.changed()`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.errors import InferqError, InvalidValue, ModelNotFound, NotFound
from inferq.registry import policies, repository
from inferq.registry.models import ModelVersion, TrafficPolicy, VersionState

ENGINES = ("llamacpp", "mlx", "ollama", "echo")
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"


class RegistryConflict(InferqError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "registry_conflict"


class PolicyNotFound(NotFound):
    code = "policy_not_found"


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    version: str = Field(pattern=VERSION)
    engine: str = Field(pattern="^(llamacpp|mlx|ollama|echo)$")
    weights: str | None = Field(default=None, max_length=4096)
    context_length: int = Field(default=2048, ge=16, le=1_048_576)
    sampling: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=32)
    description: str | None = Field(default=None, max_length=4096)
    performance: dict[str, Any] = Field(default_factory=dict)
    fallback: str | None = Field(default=None, max_length=264)
    activate: bool = False


class PolicyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern="^(ab|canary|blue_green)$")
    candidate: str = Field(pattern=VERSION)
    control: str | None = Field(default=None, pattern=VERSION, description="Default: active.")
    share: float | None = Field(default=None, ge=0.0, le=1.0)
    percent: float | None = Field(default=None, ge=0.0, le=100.0)
    sticky: str = Field(default="user", pattern="^(user|request)$")


def version_view(row: ModelVersion) -> dict[str, Any]:
    return {
        "object": "model_version",
        "id": f"{row.name}:{row.version}",
        "name": row.name,
        "version": row.version,
        "engine": row.engine,
        "weights": row.weights,
        "context_length": row.context_length,
        "sampling": row.sampling,
        "tags": row.tags,
        "description": row.description,
        "performance": row.performance,
        "fallback": row.fallback,
        "state": row.state,
        "created_at": _iso(row.created_at),
        "activated_at": _iso(row.activated_at),
        "retired_at": _iso(row.retired_at),
    }


async def register(session: AsyncSession, body: VersionCreate) -> ModelVersion:
    if await repository.get_version(session, body.name, body.version) is not None:
        raise RegistryConflict(f"'{body.name}:{body.version}' is already registered.")
    row = ModelVersion(
        id=uuid.uuid4(),
        state=VersionState.REGISTERED.value,
        created_at=datetime.now(UTC),
        **body.model_dump(exclude={"activate"}),
    )
    session.add(row)
    if body.activate:
        await repository.activate(session, row)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same version
        raise RegistryConflict(f"'{body.name}:{body.version}' is already registered.") from exc
    return row


async def require_version(session: AsyncSession, name: str, version: str) -> ModelVersion:
    row = await repository.get_version(session, name, version)
    if row is None:
        raise ModelNotFound(f"The model '{name}' has no version '{version}'.", param="version")
    return row


async def activate(session: AsyncSession, name: str, version: str) -> ModelVersion:
    row = await require_version(session, name, version)
    if row.state == VersionState.RETIRED.value:
        raise RegistryConflict(f"'{name}:{version}' is retired; register a new version.")
    if row.state != VersionState.ACTIVE.value:
        await repository.activate(session, row)
        await session.flush()
    return row


async def retire(session: AsyncSession, name: str, version: str) -> ModelVersion:
    row = await require_version(session, name, version)
    if row.state == VersionState.ACTIVE.value:
        raise RegistryConflict(f"'{name}:{version}' is active; activate another version first.")
    running = await repository.running_policy(session, name)
    if running is not None and version in (running.control, running.candidate):
        raise RegistryConflict(f"'{name}:{version}' is in running policy {running.id}.")
    row.state, row.retired_at = VersionState.RETIRED.value, datetime.now(UTC)
    return row


async def start_policy(session: AsyncSession, name: str, body: PolicyCreate) -> TrafficPolicy:
    if await repository.running_policy(session, name) is not None:
        raise RegistryConflict(f"A policy already runs on '{name}'; stop it first.")
    control = body.control or await _active_version(session, name)
    for version in (control, body.candidate):
        row = await require_version(session, name, version)
        if row.state == VersionState.RETIRED.value:
            raise RegistryConflict(f"'{name}:{version}' is retired.")
    share = body.share if body.percent is None else body.percent / 100
    policy = policies.new_policy(name, body.kind, control, body.candidate, share, body.sticky)
    session.add(policy)
    await session.flush()
    return policy


async def require_policy(session: AsyncSession, name: str, raw_id: str) -> TrafficPolicy:
    try:
        policy = await repository.get_policy(session, uuid.UUID(raw_id))
    except ValueError:
        policy = None
    if policy is None or policy.model != name:
        raise PolicyNotFound(f"No policy '{raw_id}' on model '{name}'.", param="policy_id")
    return policy


async def stop_policy(session: AsyncSession, policy: TrafficPolicy, promote: bool) -> None:
    """Stop routing by the policy; `promote` makes its candidate the active version."""
    if policy.stopped_at is not None:
        raise InvalidValue(f"policy {policy.id} is already stopped")
    policies.stop(policy)
    if promote:
        await activate(session, policy.model, policy.candidate)


async def _active_version(session: AsyncSession, name: str) -> str:
    rows = await repository.list_versions(session, name)
    active = next((r.version for r in rows if r.state == VersionState.ACTIVE.value), None)
    if active is None:
        raise ModelNotFound(f"The model '{name}' has no active version.", param="model")
    return active


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
