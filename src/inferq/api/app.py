"""The FastAPI application and its lifespan, which owns every per-process resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from inferq import __version__
from inferq.api import jobs, ops
from inferq.api.errors import install_error_handlers
from inferq.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from inferq.api.state import AppState
from inferq.catalog import resolve_model
from inferq.db.session import make_engine, make_sessionmaker
from inferq.logs import configure_logging
from inferq.queue.celery_app import make_celery
from inferq.queue.hub import EventHub
from inferq.settings import Settings, get_settings
from inferq.tokenizers import Tokenizers

log = logging.getLogger(__name__)


def _build_state(settings: Settings) -> AppState:
    db_engine = make_engine(settings)
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
    )
    return AppState(
        settings=settings,
        db_engine=db_engine,
        sessions=make_sessionmaker(db_engine),
        redis=client,
        hub=EventHub(client),
        celery=make_celery(settings),
        tokenizers=Tokenizers(),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.inferq
    await state.hub.start()
    # Load the default model's tokenizer now, not on the first request.
    state.tokenizers.get(resolve_model(state.settings, state.settings.default_model))
    log.info("api started", extra={"version": __version__})
    try:
        yield
    finally:
        await state.hub.stop()
        await state.redis.aclose()
        await state.db_engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(title="inferq", version=__version__, lifespan=lifespan)
    app.state.inferq = _build_state(settings)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(ops.router)
    app.include_router(jobs.router)
    return app
