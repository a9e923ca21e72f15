"""FastAPI dependencies that hand out the process's resources."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api.state import AppState

log = logging.getLogger(__name__)


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop that cost 15 % of the API's CPU on L1 hits.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.inferq
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(request: Request, state: StateDep) -> AsyncSession:
    """A session per request; the code that changes rows commits, anything else rolls back.

    `RequestContextMiddleware` closes it once the response is sent, as a `yield` dependency
    would. A `yield` dependency costs FastAPI an exit stack, a context manager and a cancel
    scope per request: 6 % of an L1 hit's CPU (docs/benchmarks.md, "Group commit").
    """
    opened: list[AsyncSession] | None = request.scope.get(SESSIONS_SCOPE_KEY)
    if opened is None:
        raise RuntimeError("SessionDep needs RequestContextMiddleware, which closes it")
    session = state.sessions()
    opened.append(session)
    return session


SESSIONS_SCOPE_KEY = "inferq.sessions"  # the request's sessions, for the middleware to close


async def close_sessions(opened: list[AsyncSession]) -> None:
    """Close a request's sessions: roll back what was not committed, return connections."""
    for session in opened:
        try:
            await session.close()
        except Exception:  # a broken connection: the pool has invalidated it already
            log.exception("closing a request's session failed")


SessionDep = Annotated[AsyncSession, Depends(get_session)]
