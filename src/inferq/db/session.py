"""Engine and session factories, built once per process."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from inferq.settings import Settings

_CHECKED_IN = "inferq_checked_in"


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL of the settings as asyncpg's own `connect` takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=10,
        # Fail fast when PostgreSQL is gone instead of hanging a request.
        connect_args={"timeout": 5, "command_timeout": 30},
    )
    ping_when_idle(engine, settings.database_ping_idle_s)
    return engine


def ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a pooled connection before use only when it has been idle `idle_s` or more.

    SQLAlchemy's `pool_pre_ping` pings on every checkout, and asyncpg's ping is three round
    trips (BEGIN, an empty query, ROLLBACK): half of a cache hit's trips to PostgreSQL. A
    connection in steady use needs no ping: if PostgreSQL restarts under it, the first
    statement that fails invalidates the whole pool, so only requests already in flight see
    the error. A connection that sat idle through a restart is pinged and replaced.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in < idle_s:
            return  # new, or in steady use
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool replaces this connection and every one checked in before now.
            raise exc.InvalidatePoolError(f"ping failed: {error}") from error


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
