"""Sending a job's task to its queue: the API's first send and the reconciler's resend."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

from celery import Celery
from opentelemetry.trace import SpanKind

from inferq.queue.names import RUN_JOB_TASK, queue_name
from inferq.tracing import trace_headers, tracer


class Routed(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def engine(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def queue(self) -> str | None: ...  # the pool it was routed to; None: the default queue


async def send_job(celery: Celery, job: Routed) -> None:
    """Publish the job's task (task id = job id) with the trace context; raises on failure."""

    def send() -> None:
        with tracer.start_as_current_span(
            "enqueue", kind=SpanKind.PRODUCER,
            attributes={"inferq.job_id": str(job.id), "inferq.model": job.model},
        ):  # fmt: skip
            celery.send_task(
                RUN_JOB_TASK,
                args=[str(job.id)],
                task_id=str(job.id),
                queue=job.queue or queue_name(job.engine, job.model),
                headers=trace_headers(),
            )

    # apply_async is synchronous (about 0.5 ms); keep it off the event loop.
    await asyncio.to_thread(send)
