"""Every queue name, task name, Redis key and channel of inferq, in one place."""

from __future__ import annotations

RUN_JOB_TASK = "inferq.run_job"
KEY_PREFIX = "inferq"


def queue_name(engine: str, model: str) -> str:
    """One Celery queue per (engine, model): a worker serves exactly one of them."""
    return f"{KEY_PREFIX}.{engine}.{model}"


def event_log_key(job_id: str) -> str:
    """The capped replay log of a job's events (a Redis list, with a TTL)."""
    return f"{KEY_PREFIX}:job:{job_id}:events"


def event_channel(job_id: str) -> str:
    """The pub/sub channel on which a job's events go out live."""
    return f"{KEY_PREFIX}:job:{job_id}:live"


def cancel_key(job_id: str) -> str:
    """Set when a client asks to cancel; the worker checks it between tokens."""
    return f"{KEY_PREFIX}:job:{job_id}:cancel"


WORKER_KEY_PATTERN = f"{KEY_PREFIX}:worker:*"


def worker_key(worker_id: str) -> str:
    """A live worker's heartbeat record; it expires when the worker stops renewing it."""
    return f"{KEY_PREFIX}:worker:{worker_id}"
