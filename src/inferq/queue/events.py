"""A job's token events: live over Redis pub/sub, plus a replay log for late readers.

The worker appends each event to a Redis list and publishes it in one MULTI, so the log
never lacks an event that was published. A reader subscribes first and replays the log
second; duplicates are dropped by seq, and a gap triggers a re-read of the log.
"""

from __future__ import annotations

import json
from typing import Any, Literal

EventType = Literal["token", "end", "error", "restart"]
FINAL_EVENT_TYPES = frozenset({"end", "error"})


def encode_event(seq: int, event_type: EventType, fields: dict[str, Any]) -> str:
    return json.dumps({"seq": seq, "type": event_type, **fields}, separators=(",", ":"))


def decode_event(raw: str | bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(raw)
    return event


def is_final(event: dict[str, Any]) -> bool:
    return event.get("type") in FINAL_EVENT_TYPES
