"""Pure ASGI middleware: request ids, one log line per request, the closing of the request's
database sessions, and the body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.deps import SESSIONS_SCOPE_KEY, close_sessions
from inferq.errors import PayloadTooLarge
from inferq.logs import request_id_given_var, request_id_var
from inferq.metrics import REQUEST_LATENCY, REQUESTS
from inferq.tracing import context_from, tracer

log = logging.getLogger("inferq.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """Gives each request an id (the client's `X-Request-ID` when sane) and logs its outcome."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_id = headers.get(b"x-request-id") or headers.get(b"request-id") or b""
        given = raw_id.decode("latin-1")
        is_given = bool(_SAFE_ID.match(given))
        request_id = given if is_given else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        given_token = request_id_given_var.set(is_given)
        started = time.perf_counter()
        status = 500
        sessions: list[AsyncSession] = []  # what SessionDep opens (inferq.api.deps)
        scope[SESSIONS_SCOPE_KEY] = sessions

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        span = tracer.start_span(
            f"HTTP {scope['method']}", context=context_from(_text_headers(headers)),
            kind=SpanKind.SERVER, attributes={"http.request.method": scope["method"]},
        )  # fmt: skip
        try:
            with trace.use_span(span):
                await self.app(scope, receive, send_with_id)
        finally:
            await close_sessions(sessions)
            elapsed = time.perf_counter() - started
            route = _route_label(scope)
            span.update_name(f"HTTP {scope['method']} {route}")
            span.set_attribute("http.response.status_code", status)
            span.end()
            REQUESTS.labels(route, str(status)).inc()
            REQUEST_LATENCY.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            request_id_var.reset(token)
            request_id_given_var.reset(given_token)


def _text_headers(headers: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}


def _route_label(scope: Scope) -> str:
    """The matched route's template (bounded), never the raw path (unbounded)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413, by Content-Length or while streaming in."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise PayloadTooLarge(self._message())
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns any failure while reading the body into its own 400; the client
            # must learn the real reason.
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(send)

        await self.app(scope, counting_receive, guarded_send)

    def _message(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(PayloadTooLarge(self._message()).to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
