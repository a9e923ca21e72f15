"""ORM models. Jobs are the durable record; Redis only carries them in flight."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from inferq.db.base import Base


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name="status_valid",
        ),
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_finished_at", "finished_at"),  # migration 0007
        # The breaker watcher's read (inferq.registry.outcomes), without the cache hits:
        # they have a `finished_at` and no queue (migration 0010).
        Index(
            "ix_jobs_queue_finished_at", "finished_at", postgresql_where=text("queue IS NOT NULL")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED.value)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    prompt: Mapped[str] = mapped_column(Text)
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # Who asked and how (migration 0002): the request id (409 while in flight), the OpenAI
    # `user`, the Idempotency-Key, and the group of sibling jobs of an `n` > 1 request.
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    end_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), nullable=True, index=True
    )
    choice_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Head/tail compaction (migration 0003): what the prompt was before and after it.
    prompt_truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    original_prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    effective_prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Response caches (migration 0005): "hit-exact", "hit-semantic; similarity=0.962", "miss",
    # or None when the request did not use the cache.
    cache: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Tenancy and webhooks (migration 0006): every query of a caller filters on tenant_id;
    # a job with a webhook_url gets a signed POST when it ends (inferq.auth.webhooks).
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Model registry (migration 0007): the version the job resolved to, the queue (worker
    # pool) it was sent to, and how it was routed (policy and arm, fallback, adapter).
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    queue: Mapped[str | None] = mapped_column(String(300), nullable=True)
    route: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
