"""Chat sessions and their messages (migration 0003).

An assistant message is written `pending` with the id of the job that produces it; a trigger
on `jobs` fills in its content when the job ends, so a reply is kept even when nobody is
listening (see migrations/versions/0003_sessions.py).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.orm import Mapped, mapped_column

from inferq.db.base import Base

# The text search configuration of the GIN index; queries must use the same one.
TS_CONFIG = "english"


class MessageStatus(enum.StrEnum):
    COMPLETE = "complete"
    PENDING = "pending"  # its job has not ended yet
    PARTIAL = "partial"  # its job was cancelled: the text so far
    FAILED = "failed"


class ChatSession(Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (
        Index("ix_chat_sessions_created_at_id", "created_at", "id"),
        Index("ix_chat_sessions_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Filled by the tenants issue; nullable until then.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    system_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    # Positions handed out so far; bumping it also serialises concurrent turns of a session.
    message_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("session_id", "position", name="uq_chat_messages_session_position"),
        CheckConstraint("role IN ('system', 'user', 'assistant')", name="role_valid"),
        CheckConstraint(
            "status IN ('complete', 'pending', 'partial', 'failed')", name="status_valid"
        ),
        Index("ix_chat_messages_job_id", "job_id"),
        Index("ix_chat_messages_content_tsv", "content_tsv", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default=MessageStatus.COMPLETE.value)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # No foreign key: jobs are truncated and pruned on their own schedule.
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # "hit" / "miss" once the cache issue lands; null until then.
    cache: Mapped[str | None] = mapped_column(String(10), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    content_tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{TS_CONFIG}', content)", persisted=True), deferred=True
    )
