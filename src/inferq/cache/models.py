"""The L2 entries in PostgreSQL: one row per answer that may serve a paraphrase.

A row is written with its job at submission (the vector is already computed by the lookup)
and is valid only once that job is `completed`: readers join `jobs` on status.
No foreign key, so truncating or pruning `jobs` never blocks on the cache.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, String, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from inferq.db.base import Base


class CacheEntry(Base):
    __tablename__ = "cache_entries"
    __table_args__ = (
        Index("ix_cache_entries_tenant_model", "tenant", "model"),
        Index("ix_cache_entries_job_id", "job_id"),
        Index("ix_cache_entries_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(200))
    context_hash: Mapped[str] = mapped_column(String(64))
    params_hash: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    # float32 little-endian, 384 values, unit length.
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    answer_key: Mapped[str] = mapped_column(Text)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
