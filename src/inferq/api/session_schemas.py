"""Wire models of chat sessions (REST) and of the WebSocket chat request."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inferq.db.chat import ChatMessage, ChatSession

MAX_TITLE = 200
MAX_SYSTEM_PROMPT = 32_000

# A WebSocket client's own id for a message, echoed in every reply to it (see docs/websocket.md).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
RequestId = Annotated[str, Field(strict=True, pattern=REQUEST_ID_PATTERN)]


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, strict=True, max_length=MAX_TITLE)
    system_prompt: str | None = Field(default=None, strict=True, max_length=MAX_SYSTEM_PROMPT)
    model: str | None = Field(default=None, strict=True, min_length=1, max_length=200)


class SessionPatch(BaseModel):
    """Only the fields present change; `null` clears a title or system prompt."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, strict=True, max_length=MAX_TITLE)
    system_prompt: str | None = Field(default=None, strict=True, max_length=MAX_SYSTEM_PROMPT)
    model: str | None = Field(default=None, strict=True, min_length=1, max_length=200)


class SessionView(BaseModel):
    id: str
    object: Literal["chat.session"] = "chat.session"
    title: str | None
    system_prompt: str | None
    model: str
    message_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ChatSession) -> SessionView:
        return cls(
            id=str(row.id),
            title=row.title,
            system_prompt=row.system_prompt,
            model=row.model,
            message_count=row.message_count,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class MessageView(BaseModel):
    id: str
    position: int
    role: str
    content: str
    status: str
    model: str | None
    job_id: str | None
    tokens: int | None
    finish_reason: str | None
    error: dict[str, Any] | None
    cache: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: ChatMessage, content: str | None = None) -> MessageView:
        return cls(
            id=str(row.id),
            position=row.position,
            role=row.role,
            content=row.content if content is None else content,
            status=row.status,
            model=row.model,
            job_id=str(row.job_id) if row.job_id else None,
            tokens=row.tokens,
            finish_reason=row.finish_reason,
            error=row.error,
            cache=row.cache,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


class SessionDetail(SessionView):
    messages: list[MessageView]
    # Pass as `after` to get the next page of messages; null on the last page.
    next_after: int | None


class SessionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SessionView]
    next_cursor: str | None


class SearchHitView(BaseModel):
    session_id: str
    session_title: str | None
    message_id: str
    position: int
    role: str
    snippet: str
    rank: float
    created_at: datetime


class SearchResults(BaseModel):
    object: Literal["list"] = "list"
    query: str
    data: list[SearchHitView]
    next_offset: int | None


class StreamChat(BaseModel):
    """`stream_chat`: a user turn; without `session_id` it starts a new session."""

    model_config = ConfigDict(extra="forbid")

    session_id: uuid.UUID | None = None
    prompt: str = Field(strict=True, min_length=1)
    model: str | None = Field(default=None, strict=True, min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    request_id: RequestId | None = None
