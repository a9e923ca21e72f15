"""Celery tasks. Thin: they take a job id and hand it to the runner."""

from __future__ import annotations

from inferq.queue.celery_app import celery_app
from inferq.queue.names import RUN_JOB_TASK
from inferq.workers.runner import run_job
from inferq.workers.runtime import get_runtime


@celery_app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    """Run a job; a delivery of a job that is not `queued` any more is dropped by the claim."""
    run_job(get_runtime(), job_id)
