"""WebSocket authentication: the Origin check and the credential of a socket.

A browser page on another origin must not ride a user's credentials into /v1/ws, so a
foreign `Origin` is refused at the handshake (403). Non-browser clients send no Origin.

A socket can stay open for hours, so its credential is checked again before every request
(`SocketCredential.check`): an API key through the verified-keys cache (a database read at
most every `auth_cache_ttl_s`; a revocation through this process's admin API at once), a
JWT's signature and `exp` every time and its tenant at most every `auth_cache_ttl_s`.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from inferq.api.state import AppState
from inferq.auth import jwt as jwt_auth
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


class SocketCredential:
    """The credential a socket authenticated with, and the principal it last resolved to."""

    def __init__(self, credential: str | None, principal: Principal):
        self._credential = credential
        self.principal = principal
        self._resolved_at = time.monotonic()

    async def check(self, state: AppState) -> Principal:
        """The principal, still valid now; Unauthenticated (revoked, expired) or Forbidden."""
        credential, settings = self._credential, state.settings
        fresh = time.monotonic() - self._resolved_at < settings.auth_cache_ttl_s
        if (
            fresh
            and settings.auth != "off"
            and credential is not None
            and jwt_auth.looks_like_jwt(credential)
        ):
            jwt_auth.verify(settings, credential)  # signature and exp, no database read
            return self.principal
        self.principal = await authenticate_socket(state, credential)
        self._resolved_at = time.monotonic()
        return self.principal
