"""SQL for chat sessions and messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.db.chat import TS_CONFIG, ChatMessage, ChatSession


async def create_session(
    session: AsyncSession,
    *,
    model: str,
    title: str | None = None,
    system_prompt: str | None = None,
    tenant_id: uuid.UUID | None = None,
) -> ChatSession:
    now = func.now()
    row = ChatSession(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        title=title,
        system_prompt=system_prompt,
        model=model,
        message_count=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def get_session(
    session: AsyncSession, session_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> ChatSession | None:
    """The session; with `tenant_id`, None unless it is that tenant's (404, never 403)."""
    row = await session.get(ChatSession, session_id, populate_existing=True)
    if row is not None and tenant_id is not None and row.tenant_id != tenant_id:
        return None
    return row


@dataclass(frozen=True)
class SessionFilter:
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    tenant_id: uuid.UUID | None = None


async def list_sessions(
    session: AsyncSession,
    filters: SessionFilter,
    *,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[ChatSession]:
    """Newest first; `before` is the (created_at, id) of the previous page's last row."""
    query = select(ChatSession).order_by(ChatSession.created_at.desc(), ChatSession.id.desc())
    if filters.model is not None:
        query = query.where(ChatSession.model == filters.model)
    if filters.created_after is not None:
        query = query.where(ChatSession.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(ChatSession.created_at < filters.created_before)
    if filters.tenant_id is not None:
        query = query.where(ChatSession.tenant_id == filters.tenant_id)
    if before is not None:
        created, sid = before
        query = query.where(
            or_(
                ChatSession.created_at < created,
                and_(ChatSession.created_at == created, ChatSession.id < sid),
            )
        )
    return list((await session.scalars(query.limit(limit))).all())


async def update_session(
    session: AsyncSession,
    session_id: uuid.UUID,
    values: dict[str, Any],
    *,
    tenant_id: uuid.UUID | None = None,
) -> ChatSession | None:
    query = (
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .where(ChatSession.tenant_id == tenant_id if tenant_id is not None else true())
        .values(**values, updated_at=func.now())
        .returning(ChatSession)
    )
    row = (await session.scalars(query)).one_or_none()
    await session.commit()
    return row


async def delete_session(
    session: AsyncSession, session_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> bool:
    query = delete(ChatSession).where(ChatSession.id == session_id)
    if tenant_id is not None:
        query = query.where(ChatSession.tenant_id == tenant_id)
    result = await session.execute(query)
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_messages(
    session: AsyncSession, session_id: uuid.UUID, *, after: int = -1, limit: int | None = None
) -> list[ChatMessage]:
    """Messages in order of position, from the first with position > `after`."""
    query = (
        select(ChatMessage)
        .where(ChatMessage.session_id == session_id, ChatMessage.position > after)
        .order_by(ChatMessage.position)
        .execution_options(populate_existing=True)
    )
    if limit is not None:
        query = query.limit(limit)
    return list((await session.scalars(query)).all())


async def reserve_positions(
    session: AsyncSession, session_id: uuid.UUID, count: int
) -> tuple[ChatSession, int] | None:
    """Hand out `count` message positions; the row lock holds other turns until commit."""
    query = (
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(message_count=ChatSession.message_count + count, updated_at=func.now())
        .returning(ChatSession)
        .execution_options(populate_existing=True)
    )
    row = (await session.scalars(query)).one_or_none()
    if row is None:
        return None
    return row, row.message_count - count


@dataclass(frozen=True)
class SearchHit:
    session_id: uuid.UUID
    session_title: str | None
    message_id: uuid.UUID
    position: int
    role: str
    snippet: str
    rank: float
    created_at: datetime


async def search_messages(
    session: AsyncSession,
    text: str,
    *,
    limit: int,
    offset: int,
    tenant_id: uuid.UUID | None = None,
) -> list[SearchHit]:
    """Full-text search (web-search syntax) over message content, best matches first."""
    tsquery = func.websearch_to_tsquery(TS_CONFIG, text)
    rank = func.ts_rank(ChatMessage.content_tsv, tsquery)
    snippet = func.ts_headline(
        TS_CONFIG, ChatMessage.content, tsquery, "MaxFragments=2, MaxWords=20, MinWords=5"
    )
    query = (
        select(ChatMessage, ChatSession.title, rank.label("rank"), snippet.label("snippet"))
        .join(ChatSession, ChatSession.id == ChatMessage.session_id)
        .where(ChatMessage.content_tsv.op("@@")(tsquery))
        .order_by(rank.desc(), ChatMessage.created_at.desc())
        .limit(limit)
        .offset(offset)
    )
    if tenant_id is not None:
        query = query.where(ChatSession.tenant_id == tenant_id)
    rows = (await session.execute(query)).all()
    return [
        SearchHit(
            session_id=m.session_id,
            session_title=title,
            message_id=m.id,
            position=m.position,
            role=m.role,
            snippet=snip,
            rank=float(r),
            created_at=m.created_at,
        )
        for m, title, r, snip in rows
    ]
