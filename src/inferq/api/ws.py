"""WebSocket /v1/ws: chat turns streamed token by token, several at once on one socket.

Messages both ways are JSON `{"event": str, "data": object}`. Each chat (`stream_chat` or
`resume`) runs in its own task and reads its job's events through `stream_events`, the same
replay-then-live reader as SSE, so a resume from `last_seq` has no gap and no duplicate.

Every outgoing frame goes through the socket's bounded `Outbox`, sent by one writer task: a
slow reader only ever fills its own queue, and when that is full the socket is closed with
1013 (the client reconnects and resumes from its last seq; nothing is lost, nothing piles up).

The protocol as clients see it (messages, events, error and close codes, `request_id`) is
docs/websocket.md; keep the two in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.websockets import WebSocketDisconnect

from inferq.api import chat_service, job_service
from inferq.api.errors import input_error
from inferq.api.job_events import job_events
from inferq.api.session_schemas import REQUEST_ID_PATTERN, RequestId, StreamChat
from inferq.api.state import AppState
from inferq.api.strict_json import strict_json
from inferq.auth.errors import Forbidden, Unauthenticated
from inferq.auth.principal import Principal, bind, credential_of
from inferq.auth.ws_auth import (
    CLOSE_POLICY,
    SocketCredential,
    authenticate_socket,
    origin_allowed,
)
from inferq.background import spawn
from inferq.errors import InferqError, ServiceUnavailable
from inferq.queue.events import is_final
from inferq.queue.stream import stream_events

log = logging.getLogger(__name__)
router = APIRouter()

SUBPROTOCOL = "inferq.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
_CLOSE_GRACE_S = 2.0
MAX_PENDING_STOPS = 4  # stop requests in flight per socket (chats and resumes: ws_max_streams)
_OPEN_EVENTS = frozenset({"auth", "ping", "pong"})  # allowed before authentication

Frame = tuple[str, dict[str, Any]]
_UNUSABLE = "unusable credential"  # an Authorization header that is not a bearer credential


class Outbox:
    """The frames waiting to go out on one socket: bounded, sent in order by `run`."""

    def __init__(self, websocket: WebSocket, limit: int):
        self._ws = websocket
        self._limit = limit
        self._frames: deque[str] = deque()
        self._ready = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.close_requested = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Queue a frame without waiting; a full queue closes the socket instead."""
        if self.closing is not None:
            return
        if len(self._frames) >= self._limit:
            log.warning("websocket reader too slow, closing", extra={"queued": len(self._frames)})
            self.close(CLOSE_TRY_AGAIN, "send queue full: reconnect and resume", drop=True)
            return
        self._frames.append(json.dumps({"event": event, "data": data}, separators=(",", ":")))
        self._ready.set()

    def close(self, code: int, reason: str, *, drop: bool = False) -> None:
        """Close after the frames already queued (an error that explains the close, say);
        `drop` discards them instead (an overflow: the reader is not reading anyway)."""
        if self.closing is None:
            self.closing = (code, reason)
            if drop:
                self._frames.clear()
            self.close_requested.set()
            self._ready.set()

    async def run(self) -> None:
        """Send frames until a close is asked for, then what is still queued, then the close."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._frames:
                    await self._ws.send_text(self._frames.popleft())
                if self.closing is not None:
                    break
            await self._ws.close(*self.closing)


class Resume(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(strict=True, min_length=1, max_length=100)
    last_seq: int = Field(default=-1, strict=True, ge=-1)
    request_id: RequestId | None = None


class Stop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(strict=True, min_length=1, max_length=100)
    request_id: RequestId | None = None


_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_ECHOED = frozenset({"stream_start", "stream_end", "stream_restart", "error"})


def request_id_of(data: dict[str, Any]) -> str | None:
    """The message's `request_id` when it is a valid one: echoed even if the rest is not."""
    value = data.get("request_id")
    return value if isinstance(value, str) and _REQUEST_ID.match(value) else None


def frame_of(job_id: str, event: dict[str, Any]) -> Frame:
    """A job event (see inferq.queue.events) as a WebSocket frame."""
    seq, kind = event["seq"], event["type"]
    if kind == "token":
        return "stream_token", {"job_id": job_id, "seq": seq, "token": event.get("text", "")}
    if kind == "end":
        return "stream_end", {
            "job_id": job_id,
            "seq": seq,
            "finish_reason": event.get("finish_reason"),
            "usage": event.get("usage"),
            "timings": event.get("timings"),
            "cache": event.get("cache", "miss"),  # no cache yet: every answer is generated
        }
    if kind == "error":
        error = event.get("error") or {}
        return "error", {
            "code": error.get("code", "engine_error"),
            "message": error.get("message", "generation failed"),
            "job_id": job_id,
            "seq": seq,
        }
    return "stream_restart", {"job_id": job_id, "seq": seq}  # the job restarts from scratch


def _credential(websocket: WebSocket) -> str | None:
    """The credential of the handshake, if any. Kept in memory only, never logged.

    Read as REST reads it (`credential_of`: `Authorization: Bearer`, any case, or `x-api-key`),
    else from a `bearer.<token>` subprotocol (browsers cannot set headers on a WebSocket).
    """
    if (credential := credential_of(dict(websocket.headers))) is not None:
        return credential
    if websocket.headers.get("authorization"):
        return _UNUSABLE  # another scheme (Basic, say): refused at the handshake, as before
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return str(offered[len(BEARER_SUBPROTOCOL_PREFIX) :])
    return None


def _first_error(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    return (f"{field}: {first['msg']}" if field else str(first["msg"])), field


class Connection:
    """One client socket: a reader, a writer, a keepalive and a task per chat."""

    def __init__(self, websocket: WebSocket, state: AppState):
        self.ws = websocket
        self.state = state
        self.settings = state.settings
        self.outbox = Outbox(websocket, self.settings.ws_send_queue_size)
        self.chats: set[asyncio.Task[None]] = set()
        self.helpers: set[asyncio.Task[None]] = set()
        self.last_heard = time.monotonic()
        # Validated before accept (handshake) or by an `auth` message; never logged.
        self.credential = _credential(websocket)
        self.principal: Principal | None = None
        self.checked: SocketCredential | None = None  # checked again before each request
        self._auth_task: asyncio.Task[bool] | None = None
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "stream_chat": self._on_stream_chat,
            "resume": self._on_resume,
            "stop": self._on_stop,
            "ping": lambda _: self.outbox.send("pong", {}),
            "pong": lambda _: None,
            "auth": self._on_auth,
        }

    async def serve(self) -> None:
        offered = self.ws.scope.get("subprotocols", [])
        if not origin_allowed(self.ws, self.settings) or (
            self.credential is not None and await self._authenticate(self.credential) is not None
        ):
            await self.ws.close(code=CLOSE_POLICY)  # before accept: the handshake gets 403
            return
        await self.ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        log.info("websocket opened")
        writer = asyncio.create_task(self.outbox.run())
        reader = asyncio.create_task(self._read_loop())
        keepalive = asyncio.create_task(self._keepalive())
        closing = asyncio.create_task(self.outbox.close_requested.wait())
        try:
            await asyncio.wait({writer, reader, closing}, return_when=asyncio.FIRST_COMPLETED)
            if not writer.done():
                self.outbox.close(CLOSE_NORMAL, "")
                await asyncio.wait({writer}, timeout=_CLOSE_GRACE_S)
            if not writer.done():  # stuck on a reader that does not read: give up on it
                writer.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(*(self.outbox.closing or (1000, ""))), 5)
        finally:
            tasks = [writer, reader, keepalive, closing, *self.chats, *self.helpers]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("websocket closed", extra={"close": (self.outbox.closing or (None,))[0]})

    async def _read_loop(self) -> None:
        limit = self.settings.ws_max_message_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_heard = time.monotonic()
            raw: str | bytes = message.get("text") or message.get("bytes") or b""
            size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
            if size > limit:
                self.outbox.close(CLOSE_TOO_BIG, f"message larger than {limit} bytes")
                return
            self._dispatch(raw)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = strict_json(raw)
        except ValueError as exc:
            self.error("invalid_json", f"The message is not valid JSON: {exc}.")
            return
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            self.error("invalid_message", 'A message is {"event": string, "data": object}.')
            return
        data = message.get("data") or {}
        handler = self.handlers.get(message["event"])
        if not isinstance(data, dict):
            self.error("invalid_message", "data must be a JSON object.")
        elif handler is None:
            known = ", ".join(sorted(self.handlers))
            self.error("unknown_event", f"Unknown event '{message['event'][:50]}'; known: {known}.")
        elif self._unauthenticated(message["event"]):
            self.error(
                "unauthorized",
                'Authenticate first: {"event": "auth", "data": {"token"}}.',
                request_id=request_id_of(data),
            )
            self.outbox.close(CLOSE_POLICY, "authentication required")
        else:
            handler(data)

    def _unauthenticated(self, event: str) -> bool:
        return self.principal is None and self._auth_task is None and event not in _OPEN_EVENTS

    def error(
        self,
        code: str,
        message: str,
        job_id: str | None = None,
        *,
        request_id: str | None = None,
        **extra: Any,
    ) -> None:
        data: dict[str, Any] = {"code": code, "message": message, **extra}
        if job_id is not None:
            data["job_id"] = job_id
        if request_id is not None:
            data["request_id"] = request_id
        self.outbox.send("error", data)

    def _spawn(
        self, coro: Coroutine[Any, Any, None], *, chat: bool, request_id: str | None
    ) -> None:
        spawn(self.chats if chat else self.helpers, self._guarded(coro, request_id))

    async def _guarded(self, coro: Coroutine[Any, Any, None], request_id: str | None) -> None:
        """A chat's failure is an `error` event on its socket, never the socket's end."""
        if self._auth_task is not None:
            await asyncio.wait({self._auth_task})  # an `auth` sent just before still counts
        if self.principal is None or self.checked is None:
            coro.close()
            return
        try:
            try:  # the credential again: it may have been revoked or expired since
                self.principal = await self.checked.check(self.state)
            except (Unauthenticated, Forbidden) as exc:
                self.error(exc.code, exc.message, request_id=request_id)
                self.outbox.close(CLOSE_POLICY, exc.code)
                return
            bind(self.principal)  # this task's caller: job and session queries are scoped to it
            await coro
        except InferqError as exc:
            extra: dict[str, Any] = {"param": exc.param} if exc.param else {}
            if (retry_after_s := getattr(exc, "retry_after_s", None)) is not None:  # 429, 503
                extra["retry_after_s"] = retry_after_s  # a socket has no Retry-After header
            self.error(exc.code, exc.message, request_id=request_id, **extra)
        except (RedisError, DBAPIError, OSError, UnicodeEncodeError) as exc:
            if (refused := input_error(exc)) is not None:
                self.error(refused.code, refused.message, request_id=request_id)
                return
            log.warning("backend unavailable during a chat", extra={"error": str(exc)})
            self.error(
                "service_unavailable",
                "A backend is unavailable; retry shortly.",
                request_id=request_id,
            )
        except Exception:
            log.exception("chat failed")
            self.error("internal_error", "Internal server error.", request_id=request_id)
        finally:
            coro.close()  # a no-op once run; a refused request's coroutine never starts
            self.last_heard = time.monotonic()  # the idle clock starts when a chat ends

    def _admit(self, request_id: str | None) -> bool:
        if len(self.chats) >= self.settings.ws_max_streams:
            self.error(
                "too_many_streams",
                f"At most {self.settings.ws_max_streams} chats at once on one socket.",
                request_id=request_id,
            )
            return False
        return True

    def _invalid(self, exc: ValidationError, data: dict[str, Any]) -> None:
        message, field = _first_error(exc)
        where = {"param": field} if field else {}
        self.error("invalid_value", message, request_id=request_id_of(data), **where)

    def _on_stream_chat(self, data: dict[str, Any]) -> None:
        try:
            request = StreamChat.model_validate(data)
        except ValidationError as exc:
            self._invalid(exc, data)
            return
        if self._admit(request.request_id):
            self._spawn(self._chat(request), chat=True, request_id=request.request_id)

    def _on_resume(self, data: dict[str, Any]) -> None:
        try:
            request = Resume.model_validate(data)
        except ValidationError as exc:
            self._invalid(exc, data)
            return
        if self._admit(request.request_id):
            self._spawn(self._resume(request), chat=True, request_id=request.request_id)

    def _on_stop(self, data: dict[str, Any]) -> None:
        try:
            request = Stop.model_validate(data)
        except ValidationError as exc:
            self._invalid(exc, data)
            return
        if len(self.helpers) >= MAX_PENDING_STOPS:  # each holds a pooled DB connection
            self.error(
                "too_many_requests",
                f"At most {MAX_PENDING_STOPS} stop requests pending at once on one socket; "
                "retry in a moment.",
                request.job_id,
                request_id=request.request_id,
            )
            return
        self._spawn(self._stop(request), chat=False, request_id=request.request_id)

    def _on_auth(self, data: dict[str, Any]) -> None:
        token = data.get("token")
        if not isinstance(token, str) or not token:
            self.error("invalid_value", "auth: data.token must be a non-empty string.")
            return
        self._auth_task = asyncio.create_task(self._auth_message(token))

    async def _authenticate(self, credential: str) -> InferqError | None:
        """None once `credential` is the socket's; else why it is not (never raised)."""
        try:
            self.principal = await authenticate_socket(self.state, credential)
            self.checked = SocketCredential(credential, self.principal)
        except InferqError as exc:
            self.principal = None
            return exc
        except (RedisError, DBAPIError, OSError):
            self.principal = None
            return ServiceUnavailable("A backend is unavailable; retry shortly.")
        return None

    async def _auth_message(self, token: str) -> bool:
        refused = await self._authenticate(token)
        if refused is None:
            assert self.principal is not None
            self.outbox.send("authenticated", {"tenant": self.principal.tenant_name})
            return True
        if isinstance(refused, ServiceUnavailable):
            self.error(refused.code, refused.message)
            self.outbox.close(CLOSE_TRY_AGAIN, "backend unavailable: retry")
            return False
        if isinstance(refused, Forbidden):  # a valid credential, without the scope
            self.error(refused.code, refused.message)
            self.outbox.close(CLOSE_POLICY, "insufficient scope")
            return False
        self.error(refused.code, "Invalid credentials.")
        self.outbox.close(CLOSE_POLICY, "invalid credentials")
        return False

    async def _chat(self, request: StreamChat) -> None:
        async with self.state.sessions() as db:
            turn = await chat_service.start_turn(self.state, db, request)
        start: dict[str, Any] = {"job_id": turn.job_id, "session_id": turn.session_id}
        if request.request_id is not None:
            start["request_id"] = request.request_id
        self.outbox.send("stream_start", start)
        events = stream_events(self.state.redis, self.state.hub, turn.job_id, 0)
        await self._relay(turn.job_id, events, request.request_id)

    async def _resume(self, request: Resume) -> None:
        try:
            async with self.state.sessions() as db:
                job = await job_service.load_job(db, request.job_id)
        except InferqError as exc:
            self.error(exc.code, exc.message, request.job_id, request_id=request.request_id)
            return
        events = job_events(self.state.redis, self.state.hub, job, request.last_seq + 1)
        if await self._relay(str(job.id), events, request.request_id):
            return
        # A finished job with nothing after last_seq: a resume still ends with its final frame.
        final = [e async for e in job_events(self.state.redis, self.state.hub, job, 0)][-1:]
        if not final or self.outbox.closing is not None:
            return
        if request.last_seq == final[0]["seq"]:  # the client has it all: the end once more
            kind, data = frame_of(str(job.id), final[0])
            if request.request_id is not None:
                data["request_id"] = request.request_id
            self.outbox.send(kind, data)
            return
        self.error(
            "invalid_value",
            f"last_seq {request.last_seq} is past the end of job {job.id}: its last seq is "
            f"{final[0]['seq']}.",
            str(job.id),
            request_id=request.request_id,
            param="last_seq",
        )

    async def _stop(self, request: Stop) -> None:
        try:
            async with self.state.sessions() as db:
                await job_service.cancel_job(self.state, db, request.job_id)
        except InferqError as exc:
            self.error(exc.code, exc.message, request.job_id, request_id=request.request_id)

    async def _relay(
        self, job_id: str, events: AsyncIterator[dict[str, Any]], request_id: str | None
    ) -> bool:
        """Send a job's events (`request_id` on every frame but the hot tokens); True when
        its final event was sent."""
        async for event in events:
            kind, data = frame_of(job_id, event)
            if request_id is not None and kind in _ECHOED:
                data["request_id"] = request_id
            self.outbox.send(kind, data)
            if self.outbox.closing is not None:
                return False
            if is_final(event):
                return True
        return False

    async def _keepalive(self) -> None:
        """Ping a quiet client; close a socket that stays silent with nothing streaming.

        Silence is counted from the last frame received (a JSON `pong`, any message) or the
        end of the last chat, whichever is later. Protocol-level ping/pong frames never reach
        the application (the server answers and sends them itself), so they do not count.
        """
        interval, timeout = self.settings.ws_ping_interval_s, self.settings.ws_idle_timeout_s
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(min(interval, timeout) / 2)
            now = time.monotonic()
            if now - self.last_heard >= timeout and not self.chats:
                self.outbox.close(CLOSE_NORMAL, "idle timeout")
                return
            if now - self.last_heard >= interval and now - last_ping >= interval:
                self.outbox.send("ping", {})
                last_ping = now


@router.websocket("/v1/ws")
async def chat_socket(websocket: WebSocket) -> None:
    await Connection(websocket, websocket.app.state.inferq).serve()
