"""Rate-limit headers on every response that went through admission, streaming included.

The middleware gives each request a fresh dict in a context variable; admission fills it;
the middleware adds its contents to `http.response.start`, which a streaming response also
sends only after its handler (and so admission) has run.
"""

from __future__ import annotations

from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

response_headers_var: ContextVar[dict[str, str] | None] = ContextVar(
    "inferq_limit_headers", default=None
)


def add_response_headers(headers: dict[str, str]) -> None:
    holder = response_headers_var.get()
    if holder is not None:
        holder.update(headers)


class RateLimitHeadersMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder: dict[str, str] = {}
        token = response_headers_var.set(holder)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and holder:
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in holder.items()
                    if k.lower().encode("latin-1") not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            response_headers_var.reset(token)
