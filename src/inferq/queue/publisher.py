"""The worker's side of a job's event channel (synchronous Redis: it runs beside the engine).

Fencing: `inferq:job:<id>:attempt` names the one attempt that may write a job's events. An
attempt takes it when it starts (`begin`), and every append checks it in the same Lua script
that appends, so an attempt that has been superseded (requeued after its lease expired, or
whose Redis state was lost in a restart) cannot add a single event to the log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redis.commands.core import Script

from inferq.queue.events import EventType, attempt_seq_floor, encode_event
from inferq.queue.names import attempt_key, cancel_key, event_channel, event_log_key, lease_key

log = logging.getLogger(__name__)

# Reads the seq of an encoded event (encode_event writes it first).
_LUA_SEQ = """
local function seq_of(raw)
  if not raw then return nil end
  return tonumber(string.match(raw, '^{"seq":(%d+)'))
end
"""

# KEYS: attempt, lease, log. ARGV: attempt, lease value, lease ttl ms, seq floor, fence ttl s,
# take lease (1/0). Returns the seq the attempt continues from, or -1 when superseded.
_BEGIN = (
    _LUA_SEQ
    + """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
if ARGV[6] == '1' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
local last = seq_of(redis.call('LINDEX', KEYS[3], -1))
if last then return last + 1 end
return tonumber(ARGV[4])
"""
)

# KEYS: attempt, log, channel, cancel. ARGV: attempt, payload, log ttl s, refresh ttl (1/0),
# seq, append even if the fence key is gone (1/0, for the final event after a Redis restart).
# Returns -1 when superseded, else 1 when a cancel is requested and 0 otherwise.
# An event whose seq is already in the log is not appended again: a retried call whose first
# try did reach Redis cannot duplicate it.
_EMIT = (
    _LUA_SEQ
    + """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] and not (ARGV[6] == '1' and not current) then return -1 end
local last = seq_of(redis.call('LINDEX', KEYS[2], -1))
if not last or last < tonumber(ARGV[5]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  if ARGV[4] == '1' then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
  redis.call('PUBLISH', KEYS[3], ARGV[2])
end
return redis.call('EXISTS', KEYS[4])
"""
)

_RETRYABLE = (redis.ConnectionError, redis.TimeoutError)


class AttemptLost(Exception):
    """This attempt may not write any more: it was superseded, or Redis stayed unreachable."""


class EventPublisher:
    """Numbers a job's events and writes each to the log and the live channel.

    Each write also reads the job's cancel flag in the same round trip, so checking for
    cancellation between tokens costs nothing extra. Without an `attempt` the publisher is
    unfenced (numbering from `first_seq`); the worker always passes one.
    """

    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        ttl_s: int,
        first_seq: int = 0,
        *,
        attempt: int | None = None,
        retry_s: float = 0.0,
    ):
        self._redis = client
        self._log = event_log_key(job_id)
        self._channel = event_channel(job_id)
        self._cancel = cancel_key(job_id)
        self._attempt_key = attempt_key(job_id)
        self._lease = lease_key(job_id)
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self.attempt = attempt
        self.seq = first_seq
        self._begin: Script = client.register_script(_BEGIN)
        self._emit: Script = client.register_script(_EMIT)

    def begin(
        self, owner: str, lease_ttl_s: float, seq_floor: int, *, take_lease: bool = True
    ) -> int:
        """Take the fence for this attempt (and its lease); returns the seq it continues from."""
        assert self.attempt is not None
        args: list[str | int] = [
            self.attempt,
            f"{self.attempt}:{owner}",
            int(lease_ttl_s * 1000),
            seq_floor,
            self._ttl_s,
            "1" if take_lease else "0",
        ]
        keys = [self._attempt_key, self._lease, self._log]
        start = int(self._retrying(lambda: self._begin(keys=keys, args=args)))
        if start < 0:
            raise AttemptLost(f"attempt {self.attempt} was superseded before it started")
        self.seq = start
        return start

    def emit(self, event_type: EventType, *, force: bool = False, **fields: Any) -> bool:
        """Send one event; returns True when a cancel has been requested.

        `force` appends even when the fence key is gone (Redis restarted): for the final
        event of a job whose record PostgreSQL already holds.
        """
        payload = encode_event(self.seq, event_type, fields)
        if self.attempt is None:
            cancelled = self._emit_unfenced(payload, event_type)
        else:
            cancelled = self._emit_fenced(payload, event_type, force)
        self.seq += 1
        return cancelled

    def cancel_requested(self) -> bool:
        return bool(self._retrying(lambda: self._redis.exists(self._cancel)))

    def _emit_fenced(self, payload: str, event_type: EventType, force: bool) -> bool:
        refresh = self.seq == 0 or event_type != "token"
        keys = [self._attempt_key, self._log, self._channel, self._cancel]
        assert self.attempt is not None
        args: list[str | int] = [
            self.attempt,
            payload,
            self._ttl_s,
            int(refresh),
            self.seq,
            int(force),
        ]
        result = int(self._retrying(lambda: self._emit(keys=keys, args=args)))
        if result < 0:
            raise AttemptLost(f"attempt {self.attempt} was superseded")
        return result == 1

    def _emit_unfenced(self, payload: str, event_type: EventType) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(self._log, payload)
        if self.seq == 0 or event_type != "token":
            pipe.expire(self._log, self._ttl_s)
        pipe.publish(self._channel, payload)
        pipe.exists(self._cancel)
        return bool(pipe.execute()[-1])

    def _retrying(self, call: Any) -> Any:
        """Run a Redis call, retrying through an outage for up to `retry_s`.

        Tokens wait for Redis rather than being dropped; after `retry_s` the attempt gives
        up and the reconciler runs the job again.
        """
        deadline = time.monotonic() + self._retry_s
        delay = 0.1
        while True:
            try:
                return call()
            except _RETRYABLE as exc:
                if time.monotonic() + delay > deadline:
                    raise AttemptLost(f"redis unreachable: {exc}") from exc
                log.warning("redis unreachable, retrying", extra={"error": str(exc)})
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def announce_final(
    client: redis.Redis,
    job_id: str,
    *,
    attempts: int,
    max_tokens: int,
    owner: str,
    log_ttl_s: int,
    lease_ttl_s: float,
    event_type: EventType,
    **fields: Any,
) -> None:
    """Write the final event of a job that no worker holds (cancelled while queued, or lost).

    It is written as an attempt of its own, after every attempt so far, so it is numbered
    after whatever the log holds and no late attempt can write past it.
    """
    attempt = attempts + 1
    publisher = EventPublisher(client, job_id, log_ttl_s, attempt=attempt, retry_s=5.0)
    try:
        publisher.begin(
            owner, lease_ttl_s, attempt_seq_floor(attempt, max_tokens), take_lease=False
        )
        publisher.emit(event_type, **fields)
    except AttemptLost as exc:
        log.warning("final event not written", extra={"job_id": job_id, "error": str(exc)})
