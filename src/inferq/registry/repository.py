"""SQL of the registry: versions and traffic policies."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.registry.models import ModelVersion, TrafficPolicy, VersionState


async def list_versions(session: AsyncSession, name: str | None = None) -> Sequence[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.created_at)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    return (await session.scalars(query)).all()


async def get_version(session: AsyncSession, name: str, version: str) -> ModelVersion | None:
    query = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    return (await session.scalars(query)).one_or_none()


async def names(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(ModelVersion.name).distinct())).all())


async def insert_if_absent(session: AsyncSession, row: ModelVersion) -> None:
    """Insert a version unless (name, version) exists: the seed may run in several processes."""
    values = {c.name: getattr(row, c.key) for c in ModelVersion.__table__.columns}
    values = {k: v for k, v in values.items() if v is not None}
    query = insert(ModelVersion).values(**values).on_conflict_do_nothing()
    await session.execute(query)


async def activate(session: AsyncSession, row: ModelVersion) -> None:
    """Make `row` the one active version of its name (the old active one goes `registered`)."""
    now = datetime.now(UTC)
    await session.execute(
        update(ModelVersion)
        .where(ModelVersion.name == row.name, ModelVersion.state == VersionState.ACTIVE.value)
        .values(state=VersionState.REGISTERED.value)
    )
    row.state, row.activated_at, row.retired_at = VersionState.ACTIVE.value, now, None


async def running_policies(session: AsyncSession) -> Sequence[TrafficPolicy]:
    query = select(TrafficPolicy).where(TrafficPolicy.stopped_at.is_(None))
    return (await session.scalars(query)).all()


async def list_policies(session: AsyncSession, model: str | None) -> Sequence[TrafficPolicy]:
    query = select(TrafficPolicy).order_by(TrafficPolicy.started_at.desc()).limit(200)
    if model is not None:
        query = query.where(TrafficPolicy.model == model)
    return (await session.scalars(query)).all()


async def get_policy(session: AsyncSession, policy_id: uuid.UUID) -> TrafficPolicy | None:
    return await session.get(TrafficPolicy, policy_id)


async def running_policy(session: AsyncSession, model: str) -> TrafficPolicy | None:
    query = select(TrafficPolicy).where(
        TrafficPolicy.model == model, TrafficPolicy.stopped_at.is_(None)
    )
    return (await session.scalars(query)).one_or_none()
