"""`inferq worker`: one Celery worker process pinned to one engine and model."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery.signals import setup_logging

from inferq.bundled import ensure_bundled_model
from inferq.catalog import BUNDLED_MODEL, resolve_model
from inferq.logs import configure_logging
from inferq.queue.names import queue_name
from inferq.settings import get_settings
from inferq.workers.runtime import start_runtime, stop_runtime


@setup_logging.connect
def _celery_logging(**_: Any) -> None:
    # Connecting here stops Celery from installing its own (non-JSON) log handlers.
    configure_logging(get_settings().log_level)


def run_worker(engine: str, model: str) -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    spec = resolve_model(settings, model)
    if spec.engine != engine:
        raise SystemExit(f"model {model!r} is served by engine {spec.engine!r}, not {engine!r}")
    if spec.name == BUNDLED_MODEL and spec.path is not None:
        ensure_bundled_model(spec.path)
    worker_id = f"{spec.engine}.{spec.name}@{socket.gethostname()}.{os.getpid()}"
    start_runtime(settings, spec, worker_id)
    from inferq.queue.celery_app import celery_app
    from inferq.workers import tasks  # noqa: F401  (registers the task)

    try:
        celery_app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--queues",
                queue_name(spec.engine, spec.name),
                "--hostname",
                worker_id,
                "--loglevel",
                settings.log_level,
                "--task-events",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        stop_runtime()
