"""Every queue name, task name, Redis key and channel of inferq, in one place."""

from __future__ import annotations

RUN_JOB_TASK = "inferq.run_job"
KEY_PREFIX = "inferq"


def queue_name(engine: str, model: str) -> str:
    """One Celery queue per (engine, model): a worker serves exactly one of them."""
    return f"{KEY_PREFIX}.{engine}.{model}"


# The model registry (inferq.registry): a version other than the default one is served by a
# queue of its own, and a named worker pool of a version by one more, so routing a request to
# a version or a pool really changes which worker processes it.
DEFAULT_MODEL_VERSION = "1.0.0"


def pool_queue_name(engine: str, model: str, version: str | None, pool: str = "") -> str:
    """The queue of a pool of workers serving one version of a model.

    The default version's unnamed pool keeps the plain `queue_name(engine, model)`.
    """
    name = queue_name(engine, model)
    if version and version != DEFAULT_MODEL_VERSION:
        name = f"{name}@{version}"
    return f"{name}/{pool}" if pool else name


REGISTRY_GENERATION_KEY = f"{KEY_PREFIX}:registry:generation"
REGISTRY_CHANNEL = f"{KEY_PREFIX}:registry:changes"  # each new generation, as it is made
BREAKER_WATCH_LOCK_KEY = f"{KEY_PREFIX}:breaker:watch:lock"
BREAKER_CURSOR_KEY = f"{KEY_PREFIX}:breaker:cursor"
BREAKER_KEY_PATTERN = f"{KEY_PREFIX}:breaker:pool:*"


def breaker_key(queue: str) -> str:
    """A pool's circuit breaker (a hash: state, failures, opened_at, probe...)."""
    return f"{KEY_PREFIX}:breaker:pool:{queue}"


def breaker_window_key(queue: str) -> str:
    """A pool's recent outcomes (a sorted set scored by time) for the error-rate rule."""
    return f"{KEY_PREFIX}:breaker:window:{queue}"


def breaker_seen_key(job_id: str) -> str:
    """Set once a job's outcome has been counted, so no outcome counts twice."""
    return f"{KEY_PREFIX}:breaker:seen:{job_id}"


def event_log_key(job_id: str) -> str:
    """The capped replay log of a job's events (a Redis list, with a TTL)."""
    return f"{KEY_PREFIX}:job:{job_id}:events"


def event_channel(job_id: str) -> str:
    """The pub/sub channel on which a job's events go out live."""
    return f"{KEY_PREFIX}:job:{job_id}:live"


def cancel_key(job_id: str) -> str:
    """Set when a client asks to cancel; the worker checks it between tokens."""
    return f"{KEY_PREFIX}:job:{job_id}:cancel"


def attempt_key(job_id: str) -> str:
    """The attempt that may write a job's events now (the Redis side of fencing)."""
    return f"{KEY_PREFIX}:job:{job_id}:attempt"


def lease_key(job_id: str) -> str:
    """A running attempt's lease; its worker renews it, the reconciler requeues when it is gone."""
    return f"{KEY_PREFIX}:job:{job_id}:lease"


RECONCILER_LOCK_KEY = f"{KEY_PREFIX}:reconciler:lock"
# Kombu's Redis transport keeps delivered-but-unacknowledged messages here.
BROKER_UNACKED_KEY = "unacked"
BROKER_UNACKED_INDEX_KEY = "unacked_index"

WORKER_KEY_PATTERN = f"{KEY_PREFIX}:worker:*"
# The heartbeat keys, scored by when each expires (ms): listing workers reads this, not a SCAN
# of the whole keyspace (35,000 keys and 70 round trips on a busy bench database).
WORKER_INDEX_KEY = f"{KEY_PREFIX}:workers"


def worker_key(worker_id: str) -> str:
    """A live worker's heartbeat record; it expires when the worker stops renewing it."""
    return f"{KEY_PREFIX}:worker:{worker_id}"


def request_id_key(request_id: str) -> str:
    """Held by the jobs of a request id while they are in flight (409 for a second request)."""
    return f"{KEY_PREFIX}:request:{request_id}"


def idempotency_record_key(scope: str, digest: str) -> str:
    """An Idempotency-Key's record: the body's hash and the jobs it created."""
    return f"{KEY_PREFIX}:idempotency:{scope}:{digest}"


# Response caches (inferq.cache). Tenant and model are URL-quoted segments, so a purge can
# select them by prefix and no value can forge another tenant's key.
CACHE_PREFIX = f"{KEY_PREFIX}:cache"
CACHE_L2_CHANNEL = f"{CACHE_PREFIX}:l2:changes"
CACHE_TENANT_INDEX_PATTERN = f"{CACHE_PREFIX}:l1idx:*"
CACHE_STATS_PATTERN = f"{CACHE_PREFIX}:stats:*"


def cache_answer_key(tenant_q: str, model_q: str, digest: str) -> str:
    """An L1 answer: a string with a TTL."""
    return f"{CACHE_PREFIX}:l1:{tenant_q}:{model_q}:{digest}"


def cache_tenant_index_key(tenant_q: str) -> str:
    """A tenant's L1 keys scored by expiry time: the per-tenant bound trims it."""
    return f"{CACHE_PREFIX}:l1idx:{tenant_q}"


def cache_stats_key(tenant_q: str) -> str:
    """A tenant's lookup counters (hash of `layer:result` -> count)."""
    return f"{CACHE_PREFIX}:stats:{tenant_q}"


# Rate limits and admission (inferq.auth.limits). The tenant is a hash tag, so one tenant's
# buckets, running-job sets and charges stay on one Redis shard for the Lua scripts.
RATE_LIMIT_PREFIX = f"{KEY_PREFIX}:rl"


def rate_limit_key(tenant: str, subject: str, kind: str) -> str:
    """A token bucket (`kind` requests|tokens) or running-job set (`jobs`) of a tenant or key."""
    return f"{RATE_LIMIT_PREFIX}:{{{tenant}}}:{subject}:{kind}"


def rate_charge_key(tenant: str, job_id: str) -> str:
    """What admission charged a job, so its end refunds the unused tokens exactly once."""
    return f"{RATE_LIMIT_PREFIX}:{{{tenant}}}:charge:{job_id}"


def webhook_seen_key(webhook_id: str) -> str:
    """An inbound webhook-id already processed (replay protection), with a TTL."""
    return f"{KEY_PREFIX}:webhook:seen:{webhook_id}"
