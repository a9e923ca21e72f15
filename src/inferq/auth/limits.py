"""Rate limits: token buckets and running-job sets in Redis, checked and charged in one Lua
script, so several API processes together admit exactly the limit.

Per tenant (its tier) and per key (optional per-key limits): requests per window, tokens per
window (prompt + max_tokens charged at admission; the unused part refunded when the job ends,
by `settle`), and unfinished jobs at once. A bucket of capacity C refills C per window, evenly.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from inferq.auth.principal import Principal
from inferq.queue.names import rate_charge_key, rate_limit_key
from inferq.queue.scripts import script

# A job that never ends frees its slot after this long (its charge record lives as long).
_RUNNING_TTL_MS = 6 * 3600 * 1000

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job, cost_t = ARGV[1], tonumber(ARGV[2])
local nb, nz, live_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local levels, caps, periods, costs = {}, {}, {}, {}
local refused, wait = 0, 0
for i = 1, nb do
    local a = 5 + (i - 1) * 3
    local cap, period = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local cost = 1
    if ARGV[a + 3] == 't' then cost = cost_t end
    local s = redis.call('HMGET', KEYS[1 + i], 'v', 't')
    local level = cap
    if s[1] then
        level = math.min(cap, tonumber(s[1]) + (now - tonumber(s[2])) * cap / period)
    end
    levels[i], caps[i], periods[i], costs[i] = level, cap, period, cost
    if refused == 0 and level < cost then
        refused = i
        if cost > cap then wait = -1 else wait = math.ceil((cost - level) * period / cap) end
    end
end
local base = 5 + nb * 3
for j = 1, nz do
    local key, limit = KEYS[1 + nb + j], tonumber(ARGV[base + j])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if refused == 0 and limit > 0 and redis.call('ZCARD', key) >= limit then
        refused, wait = nb + j, 1000
    end
end
if refused == 0 then
    local record, sets = {}, {}
    for i = 1, nb do
        levels[i] = levels[i] - costs[i]
        redis.call('HSET', KEYS[1 + i], 'v', levels[i], 't', now)
        redis.call('PEXPIRE', KEYS[1 + i], periods[i])
        if ARGV[5 + i * 3] == 't' then
            table.insert(record, KEYS[1 + i] .. '|' .. caps[i] .. '|' .. periods[i])
        end
    end
    for j = 1, nz do
        redis.call('ZADD', KEYS[1 + nb + j], now + live_ms, job)
        redis.call('PEXPIRE', KEYS[1 + nb + j], live_ms)
        table.insert(sets, KEYS[1 + nb + j])
    end
    redis.call('HSET', KEYS[1], 'cost', cost_t, 'buckets', table.concat(record, ' '),
               'sets', table.concat(sets, ' '))
    redis.call('PEXPIRE', KEYS[1], live_ms)
end
local out = {refused == 0 and 1 or 0, refused, wait}
for i = 1, nb do
    table.insert(out, math.max(0, math.floor(levels[i])))
    table.insert(out, math.ceil((caps[i] - levels[i]) * periods[i] / caps[i]))
end
return out
"""

_SETTLE = """
local rec = redis.call('HMGET', KEYS[1], 'cost', 'buckets', 'sets')
if not rec[1] then return 0 end
redis.call('DEL', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = tonumber(ARGV[2])
local refund = 0
if used >= 0 then refund = tonumber(rec[1]) - used end
if refund > 0 then
    for entry in string.gmatch(rec[2], '%S+') do
        local key, cap, period = string.match(entry, '^(.*)|([^|]+)|([^|]+)$')
        cap, period = tonumber(cap), tonumber(period)
        local s = redis.call('HMGET', key, 'v', 't')
        if s[1] then
            local level = math.min(cap, tonumber(s[1]) + (now - tonumber(s[2])) * cap / period)
            redis.call('HSET', key, 'v', math.min(cap, level + refund), 't', now)
        end
    end
end
for key in string.gmatch(rec[3], '%S+') do redis.call('ZREM', key, ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Bucket:
    subject: str  # "tenant" or a key id
    kind: str  # "requests" | "tokens"
    capacity: int
    window_s: int


@dataclass(frozen=True)
class Reading:
    """A bucket after a check: what is left and how long until it is full again."""

    bucket: Bucket
    remaining: int
    reset_ms: int


@dataclass
class Decision:
    admitted: bool
    readings: list[Reading] = field(default_factory=list)
    refused_kind: str | None = None  # "requests" | "tokens" | "concurrent"
    retry_after_ms: int = 0  # -1: this request can never fit the bucket


def tenant_scope(principal: Principal) -> str:
    return str(principal.tenant_id) if principal.tenant_id else "default"


def buckets_of(principal: Principal) -> list[Bucket]:
    tier = principal.tier
    rpm, tpm, _ = principal.key_limits
    found = [
        Bucket("tenant", "requests", tier.requests, tier.requests_window_s),
        Bucket("tenant", "tokens", tier.tokens, tier.tokens_window_s),
        Bucket(principal.subject, "requests", rpm or 0, 60),
        Bucket(principal.subject, "tokens", tpm or 0, 60),
    ]
    return [b for b in found if b.capacity > 0]


def running_sets_of(principal: Principal) -> list[tuple[str, int]]:
    """(subject, limit) of each running-job set; the tenant's is kept even when unlimited,
    because it is also the list of charges still to settle."""
    sets = [("tenant", principal.tier.concurrent)]
    key_limit = principal.key_limits[2]
    if key_limit and principal.key_id:
        sets.append((principal.subject, key_limit))
    return sets


def has_limits(principal: Principal) -> bool:
    return bool(buckets_of(principal)) or any(limit for _, limit in running_sets_of(principal))


class Limiter:
    def __init__(self, client: aioredis.Redis):
        self._redis = client
        self._admit = script(client, _ADMIT)
        self._settle = script(client, _SETTLE)

    async def admit(self, principal: Principal, job_id: uuid.UUID, tokens: int) -> Decision:
        """Check every limit of the principal and, only if all pass, charge them all."""
        scope = tenant_scope(principal)
        buckets, sets = buckets_of(principal), running_sets_of(principal)
        keys = [rate_charge_key(scope, str(job_id))]
        keys += [rate_limit_key(scope, b.subject, b.kind) for b in buckets]
        keys += [rate_limit_key(scope, subject, "jobs") for subject, _ in sets]
        args: list[str | int] = [str(job_id), tokens, len(buckets), len(sets), _RUNNING_TTL_MS]
        for b in buckets:
            args += [b.capacity, b.window_s * 1000, "r" if b.kind == "requests" else "t"]
        args += [limit for _, limit in sets]
        raw = await self._admit(keys=keys, args=args)
        readings = [
            Reading(b, int(raw[3 + 2 * i]), int(raw[4 + 2 * i])) for i, b in enumerate(buckets)
        ]
        refused = int(raw[1])
        kind = None
        if refused:
            kind = buckets[refused - 1].kind if refused <= len(buckets) else "concurrent"
        return Decision(bool(int(raw[0])), readings, kind, int(raw[2]))

    async def settle(self, tenant_id: uuid.UUID | None, job_id: uuid.UUID, used: int) -> bool:
        """Refund `charged - used` tokens and free the job's running slot; once per job.
        `used` < 0: free the slot and refund nothing."""
        scope = str(tenant_id) if tenant_id else "default"
        result = await self._settle(
            keys=[rate_charge_key(scope, str(job_id))], args=[str(job_id), used]
        )
        return bool(result)

    async def running(self, principal: Principal) -> dict[str, float]:
        """The jobs still charged to the tenant: job id -> when admitted (epoch seconds)."""
        key = rate_limit_key(tenant_scope(principal), "tenant", "jobs")
        members: list[Any] = await self._redis.zrange(key, 0, -1, withscores=True)
        return {
            (m.decode() if isinstance(m, bytes) else str(m)): (float(s) - _RUNNING_TTL_MS) / 1000
            for m, s in members
        }


def _duration(ms: int) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s, 1h2m3s."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def tightest(readings: list[Reading], kind: str) -> Reading | None:
    of_kind = [r for r in readings if r.bucket.kind == kind]
    return min(of_kind, key=lambda r: (r.remaining, -r.reset_ms)) if of_kind else None


def rate_headers(readings: list[Reading]) -> dict[str, str]:
    """IETF RateLimit-Policy / RateLimit and OpenAI's x-ratelimit-* for the tightest buckets."""
    headers: dict[str, str] = {}
    policy, current = [], []
    for kind in ("requests", "tokens"):
        reading = tightest(readings, kind)
        if reading is None:
            continue
        b = reading.bucket
        policy.append(f'"{kind}";q={b.capacity};w={b.window_s}')
        current.append(f'"{kind}";r={reading.remaining};t={math.ceil(reading.reset_ms / 1000)}')
        headers[f"x-ratelimit-limit-{kind}"] = str(b.capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(reading.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = _duration(reading.reset_ms)
    if policy:
        headers["RateLimit-Policy"] = ", ".join(policy)
        headers["RateLimit"] = ", ".join(current)
    return headers
