"""The worker's side of the caches: store a completed answer, announce its L2 entry.

At submission, a cache miss leaves in the job's params what this needs (`params["cache"]`:
the L1 key, TTL, tenant and the id of the pending L2 row), so the worker never recomputes
a key. Called once the final record is written, before the `end` event goes out: a client
that has seen the end of an answer finds it in the cache.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redis.exceptions import RedisError

from inferq.cache.exact import CachedAnswer, fill_answer
from inferq.cache.semantic import change_message
from inferq.db.models import Job, JobStatus
from inferq.settings import get_settings

log = logging.getLogger(__name__)

# Only answers that ended by themselves are worth repeating.
_CACHEABLE_FINISH = frozenset({"stop", "length"})


def fill_cache(client: redis.Redis, job: Job, values: dict[str, Any], pieces: list[str]) -> None:
    """Fill L1 (one script: SET with TTL, per-tenant bound) and publish the L2 entry id.

    `values` is the final record just written. Never raises: a cache that cannot be
    filled must not fail the job.
    """
    spec = job.params.get("cache")
    if not spec or values.get("status") != JobStatus.COMPLETED.value:
        return
    if values.get("finish_reason") not in _CACHEABLE_FINISH:
        return
    answer = CachedAnswer(list(pieces), values["finish_reason"], values["usage"], str(job.id))
    entry = spec.get("entry")
    message = change_message("add", id=entry) if entry else ""
    try:
        fill_answer(
            client,
            spec["key"],
            spec["tenant"],
            answer,
            int(spec["ttl"]),
            time.time(),
            get_settings().cache_max_entries_per_tenant,
            message,
        )
    except (RedisError, OSError, KeyError, ValueError) as exc:
        log.warning("cache fill failed", extra={"error": str(exc)})
