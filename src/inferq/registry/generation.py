"""The registry's generation as Redis announces it, so that a request need not GET it.

Every registry change INCRs the generation and PUBLISHes the new value
(`ModelRegistry.changed`). An API process follows the channel: while it is subscribed, the
generation it knows is current to within the message's delivery, and a request reads it from
memory instead of paying a round trip (one of the three Redis trips of an L1 hit).

A message published while the subscription is down is lost, so the generation counts as
unknown (and callers GET it, as before) from the moment the connection fails until it is
subscribed again and the value has been re-read.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inferq.background import cancel_task
from inferq.queue.clients import close_pubsub
from inferq.queue.names import REGISTRY_CHANNEL, REGISTRY_GENERATION_KEY

log = logging.getLogger(__name__)


def generation_of(raw: bytes | str | int | None) -> int:
    """The generation as stored or announced (never bumped: 0)."""
    return int(raw) if raw is not None else 0


class GenerationFollower:
    def __init__(self, client: aioredis.Redis):
        self._redis = client
        # Subscribe confirmations are kept: redis-py re-subscribes after a reconnect, and
        # each confirmation means announcements may have been missed, so the value is re-read.
        self._pubsub = client.pubsub()
        self._task: asyncio.Task[None] | None = None
        self._known: int | None = None

    @property
    def current(self) -> int | None:
        """The generation, or None while it is not followed (then GET it)."""
        return self._known

    def saw(self, generation: int) -> None:
        """A generation this process made or read; announcements can arrive out of order."""
        if self._known is not None:
            self._known = max(self._known, generation)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inferq-registry-generation")

    async def stop(self) -> None:
        self._known = None
        await cancel_task(self._task)
        await close_pubsub(self._pubsub)

    async def _run(self) -> None:
        while True:
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(REGISTRY_CHANNEL)
                await self._listen()
            except (RedisError, ConnectionError, OSError) as exc:
                self._known = None
                log.warning("registry follower lost redis, retrying", extra={"error": str(exc)})
                await asyncio.sleep(0.5)

    async def _listen(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                self._known = None  # until the value is read: what was missed is in it
                self._known = generation_of(await self._redis.get(REGISTRY_GENERATION_KEY))
            elif message["type"] == "message":
                self.saw(generation_of(message["data"]))
