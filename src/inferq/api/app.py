"""The FastAPI application and its lifespan, which owns every per-process resource."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inferq import __version__
from inferq.api import admin_models, cache_admin, chat_page, jobs, ops, sessions, workers, ws
from inferq.api.errors import install_error_handlers
from inferq.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from inferq.api.ollama.router import router as ollama_router
from inferq.api.openai.router import router as openai_router
from inferq.api.openapi_bodies import add_body_schemas
from inferq.api.shutdown import shutdown_signal
from inferq.api.state import AppState
from inferq.auth.headers import RateLimitHeadersMiddleware
from inferq.auth.principal import AdminAuth, InferenceAuth
from inferq.auth.router import admin_router, ingest_router
from inferq.auth.verified import VerifiedKeys
from inferq.auth.webhooks import WebhookDeliverer
from inferq.cache.service import CacheService
from inferq.catalog import resolve_model
from inferq.db.session import make_engine, make_sessionmaker
from inferq.embeddings import Embedder
from inferq.logs import configure_logging
from inferq.queue.celery_app import make_celery
from inferq.queue.clients import async_redis, sync_redis
from inferq.queue.hub import EventHub
from inferq.queue.reconciler import Reconciler
from inferq.registry.outcomes import BreakerWatcher
from inferq.registry.service import model_registry
from inferq.settings import Settings, get_settings
from inferq.tokenizers import Tokenizers
from inferq.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)


def _build_state(settings: Settings) -> AppState:
    db_engine = make_engine(settings)
    client = async_redis(settings.redis_url, 2, health_check_interval=30)
    session_factory = make_sessionmaker(db_engine)
    return AppState(
        settings=settings,
        db_engine=db_engine,
        sessions=session_factory,
        redis=client,
        sync_redis=sync_redis(settings.redis_url, 2),
        hub=EventHub(client),
        celery=make_celery(settings),
        tokenizers=Tokenizers(),
        cache=CacheService(settings, client, session_factory),
        verified_keys=VerifiedKeys(settings.auth_cache_ttl_s),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.inferq
    shutdown_signal.bind()
    await state.hub.start()
    # Load the default model's tokenizer now, not on the first request.
    state.tokenizers.get(resolve_model(state.settings, state.settings.default_model))
    if app.state.embedder is not None:
        app.state.embedder.start()  # loads in a thread; /v1/embeddings waits for it
    await state.cache.start(app.state.embedder)  # builds the L2 index from PostgreSQL
    # Requeues jobs of dead workers and jobs lost from Redis; one API process acts at a time.
    reconciler = Reconciler(state.settings, state.redis, state.sessions, state.celery)
    await reconciler.start()
    deliverer = WebhookDeliverer(state.settings, state.sessions)  # outbound signed webhooks
    await deliverer.start()
    # Job outcomes feed the pools' circuit breakers (inferq.registry); one process acts.
    registry = model_registry(state.settings, state.redis, state.sessions)
    await registry.start()  # read (and seed) the registry before the first request needs it
    watcher = BreakerWatcher(state.settings, state.redis, state.sessions, registry.breakers)
    await watcher.start()
    # What exists now lives as long as the process (about 155,000 objects: the modules, the
    # L2 index): out of the collector's full passes, which took 80-150 ms each on this CPU,
    # six times in a 40 s L1 storm, and now take about 18.
    gc.collect()
    gc.freeze()
    log.info("api started", extra={"version": __version__})
    try:
        yield
    finally:
        await watcher.stop()
        await registry.stop()
        await deliverer.stop()
        await reconciler.stop()
        await state.cache.stop()
        await state.hub.stop()
        await state.redis.aclose()
        state.sync_redis.close()
        await state.db_engine.dispose()
        shutdown_tracing()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    setup_tracing("inferq-api")
    app = FastAPI(title="inferq", version=__version__, lifespan=lifespan)
    app.state.inferq = _build_state(settings)
    app.state.embedder = Embedder(settings.model_dir) if settings.embeddings_enabled else None
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.include_router(ops.router)
    # Every router below but the WebSocket (it authenticates in inferq.api.ws), the chat page
    # and the signed ingest needs a credential (inferq.auth.principal); /v1/admin/* `admin`.
    # FastAPI tries the routers in this order, each route by its regex, and no two share a
    # path: the inference surfaces come first. Behind the other routers, matching
    # /v1/completions took 81 µs of an OpenAI cache hit's 1.7 ms of CPU; first, 12 µs.
    app.include_router(openai_router, dependencies=[InferenceAuth])
    app.include_router(jobs.router, dependencies=[InferenceAuth])
    app.include_router(ollama_router, dependencies=[InferenceAuth])
    app.include_router(workers.router, dependencies=[InferenceAuth])
    app.include_router(cache_admin.router, dependencies=[AdminAuth])
    app.include_router(admin_models.router)  # admin scope on each (inferq.api.admin_models)
    app.include_router(admin_models.breakers_router)
    app.include_router(admin_router)
    app.include_router(ingest_router)
    app.include_router(sessions.router, dependencies=[InferenceAuth])
    app.include_router(ws.router)
    app.include_router(chat_page.router)
    add_body_schemas(app)
    return app
