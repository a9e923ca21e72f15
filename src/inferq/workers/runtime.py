"""What a worker process builds once: its engine, Redis client, database and identity."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from inferq.catalog import ModelSpec
from inferq.db.session import make_engine, make_sessionmaker
from inferq.queue.clients import sync_redis
from inferq.queue.names import queue_name
from inferq.queue.registry import Heartbeat
from inferq.settings import Settings
from inferq.workers.dbloop import LoopThread
from inferq.workers.engine import Engine
from inferq.workers.engine import make_engine as make_model_engine


@dataclass
class WorkerRuntime:
    settings: Settings
    spec: ModelSpec
    engine: Engine
    redis: redis.Redis
    db_loop: LoopThread
    db_engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    worker_id: str
    heartbeat: Heartbeat

    @property
    def info(self) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "engine": self.spec.engine,
            "model": self.spec.name,
        }

    def close(self) -> None:
        self.heartbeat.stop()
        self.engine.unload()
        self.db_loop.run(self.db_engine.dispose(), timeout=10)
        self.db_loop.close()
        self.redis.close()


_runtime: WorkerRuntime | None = None


def start_runtime(settings: Settings, spec: ModelSpec, worker_id: str) -> WorkerRuntime:
    """Load the model and announce the worker; called once, before Celery consumes."""
    global _runtime
    engine = make_model_engine(spec, settings)
    engine.load()
    client = sync_redis(settings.redis_url, 5)
    db_loop = LoopThread()
    db_engine = make_engine(settings)
    info = {
        "id": worker_id,
        "host": socket.gethostname(),
        "engine": spec.engine,
        "model": spec.name,
        "queue": queue_name(spec.engine, spec.name),
        **engine.capacity(),
    }
    heartbeat = Heartbeat(
        client, worker_id, info, settings.worker_heartbeat_s, settings.worker_ttl_s
    )
    _runtime = WorkerRuntime(
        settings,
        spec,
        engine,
        client,
        db_loop,
        db_engine,
        make_sessionmaker(db_engine),
        worker_id,
        heartbeat,
    )
    heartbeat.start()
    return _runtime


def get_runtime() -> WorkerRuntime:
    if _runtime is None:
        raise RuntimeError("the worker runtime is not started; run `inferq worker`")
    return _runtime


def stop_runtime() -> None:
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
