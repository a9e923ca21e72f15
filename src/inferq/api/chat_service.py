"""A chat turn: the session's context plus the new prompt becomes a normal inferq job.

The user message and a `pending` assistant message (holding the job id) are committed in
the same transaction as the job row; the `jobs_store_chat_reply` trigger fills the reply in
when the job ends, whoever is or is not listening.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service
from inferq.api.schemas import JobCreate
from inferq.api.session_schemas import StreamChat
from inferq.api.state import AppState
from inferq.auth.principal import current_tenant_id
from inferq.catalog import resolve_model
from inferq.context import cut_mark
from inferq.db import sessions_repo as repo
from inferq.db.chat import ChatMessage, ChatSession, MessageStatus
from inferq.db.models import Job, JobStatus
from inferq.errors import InferqError, InvalidValue, NotFound

# Sampling parameters a turn may set; the rest of JobCreate belongs to the session.
TURN_PARAMS = frozenset(
    {"max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"}
)
_TITLE_CHARS = 60
_REPLIED = (MessageStatus.COMPLETE.value, MessageStatus.PARTIAL.value)


class SessionNotFound(NotFound):
    code = "session_not_found"


class TurnInProgress(InferqError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "turn_in_progress"


@dataclass(frozen=True)
class Turn:
    job_id: str
    session_id: str


def parse_session_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise SessionNotFound(f"No session with id '{raw}'.", param="id") from None


async def load_session(db: AsyncSession, session_id: uuid.UUID) -> ChatSession:
    row = await repo.get_session(db, session_id, tenant_id=current_tenant_id())
    if row is None:
        raise SessionNotFound(f"No session with id '{session_id}'.", param="session_id")
    return row


async def start_turn(state: AppState, db: AsyncSession, request: StreamChat) -> Turn:
    """Commit the turn's messages and its job, and enqueue the job."""
    if not request.prompt.strip():  # as an empty one (StreamChat): nothing to answer
        raise InvalidValue("prompt: must not be empty or only whitespace", param="prompt")
    model = request.model
    if request.session_id is None:
        chat = await repo.create_session(
            db, model=model or state.settings.default_model, tenant_id=current_tenant_id()
        )
    else:
        chat = await load_session(db, request.session_id)
    spec = resolve_model(state.settings, model or chat.model)
    # Positions first: the session's row lock holds a concurrent turn of the session until
    # this one commits, so the history read next shows its pending reply.
    reserved = await repo.reserve_positions(db, chat.id, 2)
    if reserved is None:  # deleted meanwhile
        raise SessionNotFound(f"No session with id '{chat.id}'.", param="session_id")
    chat, first = reserved
    history = await repo.list_messages(db, chat.id)
    await _refuse_while_generating(db, chat, history)
    messages = [*context_messages(chat, history), {"role": "user", "content": request.prompt}]
    fitted, dropped = fit_count(messages, state.settings.max_messages)
    body = job_body(spec.name, fitted, request.params)
    tokenizer = await job_service.tokenizer_of(state, spec)
    options = job_service.SubmitOptions()
    if dropped:  # recorded as the job's prompt_truncated, with the whole history's size
        full = await job_service.tokens_in(tokenizer, tokenizer.render_chat(messages))
        options = job_service.SubmitOptions(shortened_from_tokens=full)
    if chat.title is None:
        chat.title = _title(request.prompt)
    job_id = uuid.uuid4()
    db.add_all(
        [
            ChatMessage(
                id=uuid.uuid4(),
                session_id=chat.id,
                position=first,
                role="user",
                content=request.prompt,
                status=MessageStatus.COMPLETE.value,
                tokens=await job_service.tokens_in(tokenizer, request.prompt),
            ),
            ChatMessage(
                id=uuid.uuid4(),
                session_id=chat.id,
                position=first + 1,
                role="assistant",
                content="",
                status=MessageStatus.PENDING.value,
                model=spec.name,
                job_id=job_id,
            ),
        ]
    )
    job = await job_service.submit_job(state, db, body, job_id=job_id, options=options)
    return Turn(job_id=str(job.id), session_id=str(chat.id))


async def _refuse_while_generating(
    db: AsyncSession, chat: ChatSession, history: Sequence[ChatMessage]
) -> None:
    """409 turn_in_progress while a reply of the session is still being generated.

    A second turn would be generated without the first (its reply is not there yet), so the
    stored conversation would not be what the model saw. Only a reply whose job is still
    unfinished counts: one left `pending` although its job ended or is gone (pruned) does
    not lock the session.
    """
    pending = [
        m.job_id
        for m in history
        if m.role == "assistant" and m.status == MessageStatus.PENDING.value and m.job_id
    ]
    if not pending:
        return
    rows = await db.execute(select(Job.id, Job.status).where(Job.id.in_(pending)))
    running = [row.id for row in rows if not JobStatus(row.status).is_final]
    if running:
        raise TurnInProgress(
            f"Session '{chat.id}' has a turn in progress (job '{running[0]}'); send the next "
            "turn after its stream_end, or stop it first.",
            param="session_id",
        )


def context_messages(chat: ChatSession, history: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The system prompt and every answered turn, in order.

    A turn whose reply failed, is still pending or is empty is left out whole, so roles
    keep alternating user/assistant as chat templates require.
    """
    messages: list[dict[str, Any]] = []
    if chat.system_prompt:
        messages.append({"role": "system", "content": chat.system_prompt})
    asked: ChatMessage | None = None
    for message in history:
        if message.role == "user":
            asked = message
        elif message.role == "assistant" and asked is not None:
            if message.status in _REPLIED and message.content:
                messages.append({"role": "user", "content": asked.content})
                messages.append({"role": "assistant", "content": message.content})
            asked = None
    return messages


def fit_count(messages: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], int]:
    """The turn's messages cut to at most `limit` (INFERQ_MAX_MESSAGES): the oldest turns
    go first, whole (a user message and its reply), and the system prompt and the new prompt
    always stay. The cut is marked on the first message kept after it, as a token truncation
    marks its cut (inferq.context). Returns (messages, how many were dropped).
    """
    excess = len(messages) - limit
    if excess <= 0:
        return messages, 0
    head = 1 if messages[0]["role"] == "system" else 0
    # After the head, turns alternate user/assistant and end with the new user prompt.
    dropped = min(excess + excess % 2, len(messages) - head - 1)
    kept = messages[:head] + [dict(m) for m in messages[head + dropped :]]
    kept[head]["content"] = cut_mark(dropped) + str(kept[head]["content"])
    return kept, dropped


def job_body(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> JobCreate:
    unknown = sorted(set(params) - TURN_PARAMS)
    if unknown:
        raise InvalidValue(
            f"params: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(TURN_PARAMS))}",
            param=f"params.{unknown[0]}",
        )
    try:
        return JobCreate(model=model, messages=messages, truncate="auto", **params)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidValue(f"params.{field}: {first['msg']}", param=f"params.{field}") from None


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1] + "…"
