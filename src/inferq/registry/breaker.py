"""A circuit breaker per worker pool (a queue), kept in Redis so every API process agrees.

closed: requests pass; it opens after `breaker_failures` consecutive failures, or when the
error rate over `breaker_window_s` reaches `breaker_error_rate` (with at least
`breaker_min_requests` outcomes). open: requests are refused (or go to a fallback) until
`breaker_cooldown_s` has passed; then the next request is the one probe (half-open). The
probe's success closes the breaker, its failure opens it again. A probe that never reports
back is replaced after another cool-down.

Outcomes are learned from the jobs table (BreakerWatcher), so workers need not know.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from inferq.metrics import BREAKER_STATE
from inferq.queue.names import BREAKER_KEY_PATTERN, breaker_key, breaker_window_key
from inferq.settings import Settings

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
_GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

# KEYS: breaker hash. ARGV: now, cooldown_s, job id. Returns {allowed, state, wait_s}.
_ADMIT = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
if state == 'closed' then return {1, state, '0'} end
local since = tonumber(redis.call('HGET', KEYS[1], state == 'open' and 'opened_at' or 'probe_at'))
if now >= since + cooldown then
    redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_job', ARGV[3], 'probe_at', ARGV[1])
    return {1, 'half_open', '0'}
end
return {0, state, tostring(since + cooldown - now)}
"""

# KEYS: breaker hash, window zset. ARGV: now, ok (1/0), job id, failures to open, error rate,
# min requests, window_s. Returns the state after the outcome.
_RECORD = """
local now, ok, job = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3]
redis.call('ZADD', KEYS[2], now, (ok and 's:' or 'e:') .. job)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[7]))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[7])) + 60)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
    if redis.call('HGET', KEYS[1], 'probe_job') ~= job then return state end
    if ok then
        redis.call('DEL', KEYS[1], KEYS[2])
        return 'closed'
    end
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'reason', 'probe_failed')
    redis.call('HINCRBY', KEYS[1], 'opened', 1)
    return 'open'
end
if state == 'open' then return state end
if ok then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
    return 'closed'
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'state', 'closed')
local reason = false
if failures >= tonumber(ARGV[4]) then reason = 'consecutive_failures' end
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
if not reason and #members >= tonumber(ARGV[6]) then
    local errors = 0
    for _, m in ipairs(members) do
        if string.sub(m, 1, 2) == 'e:' then errors = errors + 1 end
    end
    if errors / #members >= tonumber(ARGV[5]) then reason = 'error_rate' end
end
if reason then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'reason', reason)
    redis.call('HINCRBY', KEYS[1], 'opened', 1)
    return 'open'
end
return 'closed'
"""


@dataclass(frozen=True)
class Admission:
    allowed: bool
    state: str
    retry_after_s: float
    probe: bool = False


class Breakers:
    """The breakers of every pool, as one API process uses them."""

    def __init__(self, settings: Settings, client: aioredis.Redis):
        self._settings = settings
        self._redis = client
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)

    async def admit(self, queue: str, job_id: str) -> Admission:
        """May a request go to this pool now? Takes the half-open probe when it is due."""
        allowed, state, wait = await self._admit(
            keys=[breaker_key(queue)],
            args=[repr(time.time()), str(self._settings.breaker_cooldown_s), job_id],
        )
        state = _text(state)
        BREAKER_STATE.labels(queue).set(_GAUGE[state])
        return Admission(bool(allowed), state, float(_text(wait)), probe=state == HALF_OPEN)

    async def record(self, queue: str, job_id: str, ok: bool) -> str:
        """Count one job outcome of a pool; returns the breaker's state after it."""
        s = self._settings
        state = _text(
            await self._record(
                keys=[breaker_key(queue), breaker_window_key(queue)],
                args=[
                    repr(time.time()),
                    "1" if ok else "0",
                    job_id,
                    str(s.breaker_failures),
                    str(s.breaker_error_rate),
                    str(s.breaker_min_requests),
                    str(s.breaker_window_s),
                ],
            )
        )
        BREAKER_STATE.labels(queue).set(_GAUGE[state])
        return state

    async def reset(self, queue: str) -> bool:
        """Close a breaker by hand; False when it had no record."""
        deleted = await self._redis.delete(breaker_key(queue), breaker_window_key(queue))
        BREAKER_STATE.labels(queue).set(0)
        return bool(deleted)

    async def describe(self, queue: str) -> dict[str, Any]:
        raw = await self._redis.hgetall(breaker_key(queue))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return self._view(queue, fields)

    async def all(self) -> list[dict[str, Any]]:
        """Every pool that has a breaker record (a closed breaker with no failures has none)."""
        prefix = breaker_key("")
        keys = [_text(k) async for k in self._redis.scan_iter(match=BREAKER_KEY_PATTERN)]
        return [await self.describe(key[len(prefix) :]) for key in sorted(keys)]

    def _view(self, queue: str, fields: dict[str, str]) -> dict[str, Any]:
        state = fields.get("state", CLOSED)
        BREAKER_STATE.labels(queue).set(_GAUGE[state])
        view: dict[str, Any] = {
            "pool": queue,
            "state": state,
            "consecutive_failures": int(fields.get("failures", 0)),
            "times_opened": int(fields.get("opened", 0)),
            "reason": fields.get("reason") if state != CLOSED else None,
        }
        if state == OPEN:
            reopen = float(fields["opened_at"]) + self._settings.breaker_cooldown_s
            view["retry_after_s"] = round(max(0.0, reopen - time.time()), 3)
        if state == HALF_OPEN:
            view["probe_job"] = fields.get("probe_job")
        return view


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
