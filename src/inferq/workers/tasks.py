"""Celery tasks. Thin: they take a job id and hand it to the runner."""

from __future__ import annotations

from celery import Task
from opentelemetry.trace import SpanKind

from inferq.queue.celery_app import celery_app
from inferq.queue.names import RUN_JOB_TASK
from inferq.tracing import context_from, tracer
from inferq.workers.runner import run_job
from inferq.workers.runtime import get_runtime


@celery_app.task(name=RUN_JOB_TASK, bind=True)
def run_job_task(self: Task, job_id: str) -> None:  # type: ignore[type-arg]
    """Run a job; a delivery of a job that is not `queued` any more is dropped by the claim."""
    # Celery puts custom message headers on the request itself (protocol 2).
    carrier = {"traceparent": self.request.get("traceparent")}
    with tracer.start_as_current_span(
        "celery.run_job", context=context_from(carrier), kind=SpanKind.CONSUMER,
        attributes={"inferq.job_id": job_id},
    ):  # fmt: skip
        run_job(get_runtime(), job_id)
