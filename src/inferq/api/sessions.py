"""REST chat sessions: create, list, read with messages, update, delete, search, export."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service
from inferq.api.chat_service import SessionNotFound, load_session, parse_session_id
from inferq.api.deps import SessionDep, StateDep
from inferq.api.pagination import decode_cursor, encode_cursor
from inferq.api.session_schemas import (
    MessageView,
    SearchHitView,
    SearchResults,
    SessionCreate,
    SessionDetail,
    SessionList,
    SessionPatch,
    SessionView,
)
from inferq.api.state import AppState
from inferq.auth.principal import current_tenant_id
from inferq.catalog import resolve_model
from inferq.db import sessions_repo as repo
from inferq.db.chat import ChatMessage, MessageStatus
from inferq.errors import InvalidRequest, JobNotFound
from inferq.queue.events import current_attempt_text
from inferq.queue.stream import read_log

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
# Message positions are PostgreSQL `integer`s: a larger `after` is refused as a value (422),
# never sent to the driver.
MAX_POSITION = 2**31 - 1


@router.post("", status_code=201, response_model=SessionView)
async def create(body: SessionCreate, state: StateDep, session: SessionDep) -> SessionView:
    model = resolve_model(state.settings, body.model or state.settings.default_model)
    row = await repo.create_session(
        session,
        model=model.name,
        title=body.title,
        system_prompt=body.system_prompt,
        tenant_id=current_tenant_id(),
    )
    await session.commit()
    return SessionView.of(row)


@router.get("", response_model=SessionList)
async def list_sessions(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    model: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> SessionList:
    filters = repo.SessionFilter(
        model=model,
        created_after=created_after,
        created_before=created_before,
        tenant_id=current_tenant_id(),
    )
    rows = await repo.list_sessions(
        session, filters, limit=limit + 1, before=decode_cursor(cursor) if cursor else None
    )
    page, more = rows[:limit], len(rows) > limit
    return SessionList(
        data=[SessionView.of(r) for r in page],
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more else None,
    )


@router.get("/search", response_model=SearchResults)
async def search(
    session: SessionDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> SearchResults:
    hits = await repo.search_messages(
        session, q, limit=limit + 1, offset=offset, tenant_id=current_tenant_id()
    )
    views = [SearchHitView(**_hit_fields(h)) for h in hits[:limit]]
    return SearchResults(
        query=q, data=views, next_offset=offset + limit if len(hits) > limit else None
    )


@router.get("/{session_id}", response_model=SessionDetail)
async def read(
    session_id: str,
    state: StateDep,
    session: SessionDep,
    after: Annotated[int, Query(ge=-1, le=MAX_POSITION)] = -1,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SessionDetail:
    row = await load_session(session, parse_session_id(session_id))
    messages = await repo.list_messages(session, row.id, after=after, limit=limit + 1)
    page, more = messages[:limit], len(messages) > limit
    views = [await _message_view(state, m) for m in page]
    return SessionDetail(
        **SessionView.of(row).model_dump(),
        messages=views,
        next_after=page[-1].position if more else None,
    )


@router.patch("/{session_id}", response_model=SessionView)
async def patch(
    session_id: str, body: SessionPatch, state: StateDep, session: SessionDep
) -> SessionView:
    sid = parse_session_id(session_id)
    values = body.model_dump(include=body.model_fields_set)
    if "model" in values:
        if values["model"] is None:
            raise InvalidRequest("model: cannot be null", param="model")
        values["model"] = resolve_model(state.settings, values["model"]).name
    if not values:
        return SessionView.of(await load_session(session, sid))
    row = await repo.update_session(session, sid, values, tenant_id=current_tenant_id())
    if row is None:
        raise SessionNotFound(f"No session with id '{session_id}'.", param="id")
    return SessionView.of(row)


@router.delete("/{session_id}", status_code=204)
async def delete(session_id: str, state: StateDep, session: SessionDep) -> Response:
    """Delete the session and its messages, and cancel its turns still generating: nobody
    can read their replies any more, so they are neither run on nor charged in full."""
    sid = parse_session_id(session_id)
    unfinished = await _unfinished_jobs(session, sid)
    if not await repo.delete_session(session, sid, tenant_id=current_tenant_id()):
        raise SessionNotFound(f"No session with id '{session_id}'.", param="id")
    for job_id in unfinished:
        try:  # the tenant's own jobs only (cancel_job is tenant-scoped); ended ones are kept
            await job_service.cancel_job(state, session, str(job_id))
        except JobNotFound:  # pruned meanwhile
            continue
    return Response(status_code=204)


async def _unfinished_jobs(session: AsyncSession, sid: uuid.UUID) -> list[uuid.UUID]:
    query = select(ChatMessage.job_id).where(
        ChatMessage.session_id == sid,
        ChatMessage.status == MessageStatus.PENDING.value,
        ChatMessage.job_id.is_not(None),
    )
    return [job_id for job_id in (await session.scalars(query)).all() if job_id is not None]


@router.get("/{session_id}/export")
async def export(session_id: str, state: StateDep, session: SessionDep) -> JSONResponse:
    """The whole session as one JSON document, offered as a download."""
    row = await load_session(session, parse_session_id(session_id))
    messages = await repo.list_messages(session, row.id)
    document = {
        "object": "chat.session.export",
        "exported_at": datetime.now(UTC).isoformat(),
        "session": SessionView.of(row).model_dump(mode="json"),
        "messages": [(await _message_view(state, m)).model_dump(mode="json") for m in messages],
    }
    filename = f"inferq-session-{row.id}.json"
    return JSONResponse(
        document, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


async def _message_view(state: AppState, message: ChatMessage) -> MessageView:
    """A pending reply shows the text generated so far, from the job's replay log."""
    if message.status != MessageStatus.PENDING.value or message.job_id is None:
        return MessageView.of(message)
    events = await read_log(state.redis, str(message.job_id))
    return MessageView.of(message, content=current_attempt_text(events))


def _hit_fields(hit: repo.SearchHit) -> dict[str, Any]:
    return {
        "session_id": str(hit.session_id),
        "session_title": hit.session_title,
        "message_id": str(hit.message_id),
        "position": hit.position,
        "role": hit.role,
        "snippet": hit.snippet,
        "rank": hit.rank,
        "created_at": hit.created_at,
    }
