"""A job's token events: live over Redis pub/sub, plus a replay log for late readers.

The worker appends each event to a Redis list and publishes it in one atomic step, so the log
never lacks an event that was published. A reader subscribes first and replays the log
second; duplicates are dropped by seq, and a gap triggers a re-read of the log.

Attempts: when a job runs again (its worker died), the new attempt continues seq where the
log ends and first emits `{"seq", "type": "restart", "attempt"}`; a reader discards the text
it has so far. If Redis lost the log, the new attempt starts at `attempt_seq_floor`, above
every seq an earlier attempt can have used, so a seq is never reused for another event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Literal

EventType = Literal["token", "end", "error", "restart"]
FINAL_EVENT_TYPES = frozenset({"end", "error"})


def encode_event(seq: int, event_type: EventType, fields: dict[str, Any]) -> str:
    return dump_event({"seq": seq, "type": event_type, **fields})


def dump_event(event: dict[str, Any]) -> str:
    """An event as the log holds it; `seq` must be its first key (the publisher's Lua scripts
    read it by pattern)."""
    if event["type"] == "token" and len(event) == 3:
        # What json.dumps gives for this dict, without its encoder's Python layers: a cache
        # hit writes one per piece of its answer.
        return f'{{"seq":{event["seq"]},"type":"token","text":{_quote(event["text"])}}}'
    return json.dumps(event, separators=(",", ":"))


def decode_event(raw: str | bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(raw)
    return event


def is_final(event: dict[str, Any]) -> bool:
    return event.get("type") in FINAL_EVENT_TYPES


def attempt_seq_floor(attempt: int, max_tokens: int) -> int:
    """A seq above every event of attempts before `attempt`.

    One attempt emits at most max_tokens + 3 events: a restart, one text event per token
    plus the stop matcher's flush, and the final event.
    """
    return max(0, attempt - 1) * (max_tokens + 3)


def current_attempt_text(events: Iterable[dict[str, Any]]) -> str:
    """The text streamed by the latest attempt: a restart event discards what came before."""
    pieces: list[str] = []
    for event in events:
        if event["type"] == "restart":
            pieces.clear()
        elif event["type"] == "token":
            pieces.append(event.get("text", ""))
    return "".join(pieces)
