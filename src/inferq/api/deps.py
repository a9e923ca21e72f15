"""FastAPI dependencies that hand out the process's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api.state import AppState
from inferq.settings import Settings


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop that cost 15 % of the API's CPU on L1 hits.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.inferq
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session per request; the code that changes rows commits, anything else rolls back."""
    async with state.sessions() as session:
        yield session


async def get_redis(state: StateDep) -> aioredis.Redis:
    return state.redis


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
