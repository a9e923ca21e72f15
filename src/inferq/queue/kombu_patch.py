"""A guard around one kombu 5.7 failure that would otherwise stop a worker for good.

When the Redis connection drops while thread-pool tasks hold unacknowledged messages (acks
late), kombu releases the channel's connection and then, through that released channel,
tries to put the messages back (`restore_unacked_once`) or to ack or reject a message whose
task just ended. Each raises AttributeError inside Celery's connection handling, and Celery
ends the worker with "Unrecoverable error" (it then hangs instead of exiting). Here those
calls are skipped with a warning, so the consumer reconnects. Nothing is lost: the messages
stay in kombu's unacked set until its visibility-timeout restore, a redelivered task of a
finished job is dropped by the claim, and inferq's leases and reconciler run the jobs of a
lost attempt again (docs/reliability.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)
_GUARDED = ("restore_unacked_once", "ack", "reject")


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except AttributeError as exc:  # the channel's connection is already released
            log.warning(f"broker connection gone; kombu {name} skipped", extra={"error": repr(exc)})
            return None

    guarded.__inferq_guard__ = True  # type: ignore[attr-defined]
    return guarded


def install() -> None:
    """Wrap the methods once per process (idempotent)."""
    for name in _GUARDED:
        method = getattr(kombu_redis.QoS, name)
        if not getattr(method, "__inferq_guard__", False):
            setattr(kombu_redis.QoS, name, _guard(name, method))
