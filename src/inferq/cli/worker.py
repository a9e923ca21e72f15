"""`inferq worker`: one Celery worker process pinned to one engine, model and device."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun
from pydantic import ValidationError

from inferq import __version__
from inferq.bundled import ensure_bundled_model
from inferq.catalog import BUNDLED_MODEL
from inferq.logs import configure_logging
from inferq.metrics import export_worker_gauges, serve_worker_metrics
from inferq.queue.registry import BusySlots
from inferq.registry.served import served_model
from inferq.settings import Settings, get_settings
from inferq.tracing import setup_tracing
from inferq.workers.runtime import WorkerRuntime, start_runtime, stop_runtime

log = logging.getLogger(__name__)
_busy = BusySlots()


@setup_logging.connect
def _celery_logging(**_: Any) -> None:
    # Connecting here stops Celery from installing its own (non-JSON) log handlers.
    configure_logging(get_settings().log_level)


@task_prerun.connect
def _job_started(**_: Any) -> None:
    _busy.enter()


@task_postrun.connect
def _job_ended(**_: Any) -> None:
    _busy.leave()


def worker_settings(settings: Settings, slots: int | None, device: str | None) -> Settings:
    """The settings with this worker's --slots and --device applied (flags win over env)."""
    update: dict[str, Any] = {}
    if slots is not None:
        update["worker_slots"] = slots
    if device is not None:
        update["worker_device"] = device
    try:  # model_copy would skip the fields' bounds (1 <= worker_slots <= 64)
        return type(settings).model_validate({**settings.model_dump(), **update})
    except ValidationError as exc:
        raise SystemExit(f"inferq worker: {exc.errors()[0]['msg']} (--slots/--device)") from None


def run_worker(
    engine: str, model: str, slots: int | None = None, device: str | None = None
) -> None:
    settings = worker_settings(get_settings(), slots, device)
    configure_logging(settings.log_level)
    setup_tracing("inferq-worker")
    served = served_model(settings, model)  # name[:version] (inferq.registry)
    spec = served.spec
    if spec.engine != engine:
        raise SystemExit(f"model {model!r} is served by engine {spec.engine!r}, not {engine!r}")
    if spec.name == BUNDLED_MODEL and spec.path is not None:
        ensure_bundled_model(spec.path)
    worker_id = f"{spec.engine}.{served.label}@{socket.gethostname()}.{os.getpid()}"
    runtime = start_runtime(settings, spec, worker_id)
    _announce(runtime)
    runtime.heartbeat.update(**served.heartbeat())  # its queue, version, pool, adapters
    from inferq.queue.celery_app import celery_app
    from inferq.workers import tasks  # noqa: F401  (registers the task)

    try:
        _consume(celery_app, _celery_argv(settings, served.queue, worker_id))
    finally:
        stop_runtime()


def _consume(celery_app: Celery, argv: list[str]) -> None:
    """Run Celery's consumer; start it again (the model stays loaded) if it dies on its own.

    kombu 5.7's Redis transport can end the whole worker with "Unrecoverable error" when
    the broker connection drops while thread-pool tasks hold unacked messages. A stop that
    was asked for (SIGTERM, Ctrl-C) exits with 0 and is final.
    """
    while True:
        try:
            celery_app.worker_main(argv)
            return
        except SystemExit as exc:
            if not exc.code:
                return
            log.warning("celery consumer stopped, starting it again", extra={"exit": exc.code})
            time.sleep(1.0)


def _announce(runtime: WorkerRuntime) -> None:
    """Complete the registry record: device, slots, version, and the live load at each beat."""
    settings, engine = runtime.settings, runtime.engine

    def live() -> dict[str, Any]:
        record = {**engine.capacity(), "slots": settings.worker_slots, "slots_busy": _busy.busy}
        export_worker_gauges(runtime.worker_id, record)
        return record

    runtime.heartbeat.update(
        live=live,
        metrics_port=serve_worker_metrics(settings.worker_metrics_port),
        device=settings.worker_device or getattr(engine, "device", None) or "cpu",
        version=__version__,
        pid=os.getpid(),
        started_at=runtime.heartbeat.record()["heartbeat_at"],
    )


def _celery_argv(settings: Settings, queue: str, worker_id: str) -> list[str]:
    # Several slots: a thread per job, all feeding the engine's shared batch. Prefetch stays
    # at 1 per thread (celery_app) and acks stay late, so a job waits in Redis, not in a
    # worker that is already full.
    slots = settings.worker_slots
    pool = ["--pool=threads", f"--concurrency={slots}"] if slots > 1 else ["--pool=solo"]
    return [
        "worker",
        *pool,
        "--queues",
        queue,
        "--hostname",
        worker_id,
        "--loglevel",
        settings.log_level,
        "--task-events",
        "--without-gossip",
        "--without-mingle",
    ]
