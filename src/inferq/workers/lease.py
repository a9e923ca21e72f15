"""Leases of running attempts: one thread per worker process renews all of them.

A lease is the Redis key `inferq:job:<id>:lease` (value `<attempt>:<worker>`, with a TTL),
taken by `EventPublisher.begin`. While it lives, the job's attempt is known to be running;
when its worker dies the key expires and the reconciler runs the job again. A renewal only
extends a lease whose attempt still holds the job's fence, and never recreates a lost one:
after a Redis restart the attempt learns it is lost instead of racing the reconciler.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field

import redis
from redis.commands.core import Script

from inferq.queue.names import attempt_key, event_log_key, lease_key

log = logging.getLogger(__name__)

# KEYS: lease, attempt, log. ARGV: attempt, lease ttl ms, fence and log ttl s. 1 if renewed.
_RENEW = """
local value = redis.call('GET', KEYS[1])
if not value or string.match(value, '^(%d+):') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""

# KEYS: lease. ARGV: attempt. Deletes the lease only if this attempt still holds it.
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and string.match(value, '^(%d+):') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(eq=False)
class Lease:
    job_id: str
    attempt: int
    lost: threading.Event = field(default_factory=threading.Event)

    @property
    def is_lost(self) -> bool:
        return self.lost.is_set()


class LeaseKeeper:
    """Renews the leases of every attempt running in this process (thread-safe)."""

    def __init__(self, client: redis.Redis, ttl_s: float, renew_s: float, fence_ttl_s: int):
        self._redis = client
        self._ttl_ms = int(ttl_s * 1000)
        self._renew_s = renew_s
        self._fence_ttl_s = fence_ttl_s
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renew: Script = client.register_script(_RENEW)
        self._release: Script = client.register_script(_RELEASE)
        self._thread = threading.Thread(target=self._run, name="inferq-leases", daemon=True)
        self._thread.start()

    def hold(self, job_id: str, attempt: int) -> Lease:
        """Keep renewing a lease that `EventPublisher.begin` took."""
        lease = Lease(job_id, attempt)
        with self._lock:
            self._leases.add(lease)
        return lease

    def release(self, lease: Lease) -> None:
        """Stop renewing and drop the key, so the job is not mistaken for a lost one."""
        with self._lock:
            self._leases.discard(lease)
        with contextlib.suppress(redis.RedisError):  # else the key expires by itself
            self._release(keys=[lease_key(lease.job_id)], args=[lease.attempt])

    def renew_all(self) -> None:
        with self._lock:
            leases = list(self._leases)
        if not leases:
            return
        pipe = self._redis.pipeline(transaction=False)
        for lease in leases:
            job = lease.job_id
            keys = [lease_key(job), attempt_key(job), event_log_key(job)]
            args = [lease.attempt, self._ttl_ms, self._fence_ttl_s]
            self._renew(keys=keys, args=args, client=pipe)
        for lease, renewed in zip(leases, pipe.execute(), strict=True):
            if not renewed:
                log.warning("lease lost", extra={"job_id": lease.job_id, "attempt": lease.attempt})
                lease.lost.set()
                with self._lock:
                    self._leases.discard(lease)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._renew_s):
            try:
                self.renew_all()
            except redis.RedisError as exc:
                # Leases may lapse while Redis is away; the next renewal tells which did.
                log.warning("lease renewal failed", extra={"error": str(exc)})


_keeper: LeaseKeeper | None = None
_keeper_lock = threading.Lock()


def lease_keeper(
    client: redis.Redis, ttl_s: float, renew_s: float, fence_ttl_s: int
) -> LeaseKeeper:
    """The process's one keeper, started on first use."""
    global _keeper
    with _keeper_lock:
        if _keeper is None:
            _keeper = LeaseKeeper(client, ttl_s, renew_s, fence_ttl_s)
        return _keeper
