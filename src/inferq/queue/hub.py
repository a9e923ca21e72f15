"""One Redis pub/sub connection per API process, fanned out to every reader of every job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inferq.background import cancel_task
from inferq.queue.clients import close_pubsub
from inferq.queue.events import decode_event
from inferq.queue.names import KEY_PREFIX, event_channel

log = logging.getLogger(__name__)

# The hub always listens here, so its connection is never left with zero subscriptions.
_ANCHOR_CHANNEL = f"{KEY_PREFIX}:hub"

Subscriber = asyncio.Queue[dict[str, object]]


class EventHub:
    """Routes live job events to per-reader queues.

    A message can be missed while the connection is re-established; readers recover from
    the replay log (see `inferq.queue.stream`), so the hub only has to be fast, not perfect.
    """

    def __init__(self, client: aioredis.Redis):
        self._redis = client
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.subscribe(_ANCHOR_CHANNEL)
        self._task = asyncio.create_task(self._run(), name="inferq-event-hub")

    async def stop(self) -> None:
        await cancel_task(self._task)
        await close_pubsub(self._pubsub)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Subscriber]:
        channel = event_channel(job_id)
        queue: Subscriber = asyncio.Queue()
        first = not self._subscribers[channel]
        self._subscribers[channel].add(queue)
        try:
            if first:
                await self._pubsub.subscribe(channel)
            yield queue
        finally:
            self._subscribers[channel].discard(queue)
            if not self._subscribers[channel]:
                del self._subscribers[channel]
                with contextlib.suppress(RedisError, ConnectionError):
                    await self._pubsub.unsubscribe(channel)

    async def _run(self) -> None:
        # redis-py re-subscribes every known channel when the connection comes back.
        while True:
            try:
                await self._listen()
            except (RedisError, ConnectionError, OSError) as exc:
                log.warning("event hub lost redis, reconnecting", extra={"error": str(exc)})
                await asyncio.sleep(0.5)

    async def _listen(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            readers = self._subscribers.get(channel)
            if readers:
                event = decode_event(message["data"])
                for queue in readers:
                    queue.put_nowait(event)
