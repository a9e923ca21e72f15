"""The worker's side of a job's event channel (synchronous Redis: it runs beside the engine)."""

from __future__ import annotations

from typing import Any

import redis

from inferq.queue.events import EventType, encode_event
from inferq.queue.names import cancel_key, event_channel, event_log_key


class EventPublisher:
    """Numbers a job's events from 0 and writes each to the log and the live channel.

    Each write also reads the job's cancel flag in the same round trip, so checking for
    cancellation between tokens costs nothing extra.
    """

    def __init__(self, client: redis.Redis, job_id: str, ttl_s: int, first_seq: int = 0):
        self._redis = client
        self._log = event_log_key(job_id)
        self._channel = event_channel(job_id)
        self._cancel = cancel_key(job_id)
        self._ttl_s = ttl_s
        self.seq = first_seq

    def emit(self, event_type: EventType, **fields: Any) -> bool:
        """Send one event; returns True when a cancel has been requested."""
        payload = encode_event(self.seq, event_type, fields)
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(self._log, payload)
        if self.seq == 0 or event_type != "token":
            pipe.expire(self._log, self._ttl_s)
        pipe.publish(self._channel, payload)
        pipe.exists(self._cancel)
        results = pipe.execute()
        self.seq += 1
        return bool(results[-1])

    def cancel_requested(self) -> bool:
        return bool(self._redis.exists(self._cancel))
