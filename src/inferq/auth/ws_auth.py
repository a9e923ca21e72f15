"""WebSocket authentication: the Origin check and the credential of a socket.

A browser page on another origin must not ride a user's credentials into /v1/ws, so a
foreign `Origin` is refused at the handshake (403). Non-browser clients send no Origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from inferq.api.state import AppState
from inferq.auth.errors import Forbidden
from inferq.auth.principal import Principal, resolve_principal
from inferq.settings import Settings

CLOSE_POLICY = 1008  # policy violation: no or bad credentials, foreign origin


def origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    if origin.rstrip("/") in {o.rstrip("/") for o in settings.ws_allowed_origins}:
        return True
    host = websocket.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


async def authenticate_socket(state: AppState, credential: str | None) -> Principal:
    """The principal of a socket's credential (Unauthenticated when missing or invalid)."""
    principal = await resolve_principal(
        state.settings, state.sessions, state.verified_keys, credential
    )
    if "inference" not in principal.scopes:
        raise Forbidden("This credential lacks the 'inference' scope.")
    return principal
