"""Registry tables (migration 0007): model versions and the traffic policies over them."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from inferq.db.base import Base


class VersionState(enum.StrEnum):
    REGISTERED = "registered"
    ACTIVE = "active"
    RETIRED = "retired"


class PolicyKind(enum.StrEnum):
    AB = "ab"
    CANARY = "canary"
    BLUE_GREEN = "blue_green"


class ModelVersion(Base):
    """One version of a model. At most one version of a name is `active` (a partial index)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint("state IN ('registered', 'active', 'retired')", name="state_valid"),
        Index("uq_model_versions_name_version", "name", "version", unique=True),
        Index(
            "uq_model_versions_one_active",
            "name",
            unique=True,
            postgresql_where=text("state = 'active'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str] = mapped_column(String(50))
    # A path (GGUF file, MLX folder) or an engine-side name; None: the engine needs none.
    weights: Mapped[str | None] = mapped_column(Text, nullable=True)
    context_length: Mapped[int] = mapped_column(Integer)
    sampling: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONB, default=list)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    performance: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Where requests go while every pool of this version has its breaker open ("name[:ver]").
    fallback: Mapped[str | None] = mapped_column(String(264), nullable=True)
    state: Mapped[str] = mapped_column(String(20), default=VersionState.REGISTERED.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TrafficPolicy(Base):
    """An A/B test, canary or blue-green rollout over two versions of one model.

    `control` is the version most traffic starts on, `candidate` the new one; `share` is the
    fraction routed to the candidate (A/B: the split; canary: the percentage / 100; blue-green:
    0 or 1). At most one policy per model is running (a partial index).
    """

    __tablename__ = "traffic_policies"
    __table_args__ = (
        CheckConstraint("kind IN ('ab', 'canary', 'blue_green')", name="kind_valid"),
        CheckConstraint("share >= 0 AND share <= 1", name="share_valid"),
        Index(
            "uq_traffic_policies_one_running",
            "model",
            unique=True,
            postgresql_where=text("stopped_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    control: Mapped[str] = mapped_column(String(64))
    candidate: Mapped[str] = mapped_column(String(64))
    share: Mapped[float] = mapped_column()
    # A/B: "user" (the request's `user`, else random) or "request" (no stickiness).
    sticky: Mapped[str] = mapped_column(String(20), default="user")
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
