"""Closing a pub/sub connection at shutdown never hangs (redis-py issue 3941)."""

from __future__ import annotations

import asyncio
import time

import pytest

from inferq.queue.clients import async_redis, close_pubsub
from inferq.settings import get_settings


async def test_a_close_that_never_returns_is_cut_short_and_the_socket_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = async_redis(get_settings().redis_url, 2)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("inferq:test:close")
    connection = pubsub.connection
    assert connection is not None and connection.is_connected

    async def hangs() -> None:  # what redis-py 8's aclose sometimes does: wait_closed forever
        await asyncio.Event().wait()

    monkeypatch.setattr(pubsub, "aclose", hangs)
    started = time.monotonic()
    await close_pubsub(pubsub)
    assert time.monotonic() - started < 3
    assert not connection.is_connected
    await client.aclose()


async def test_a_normal_close_unsubscribes() -> None:
    client = async_redis(get_settings().redis_url, 2)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("inferq:test:close")
    assert await client.pubsub_numsub("inferq:test:close") == [(b"inferq:test:close", 1)]
    await close_pubsub(pubsub)
    for _ in range(100):  # the server drops the subscriber as it reads the close
        if await client.pubsub_numsub("inferq:test:close") == [(b"inferq:test:close", 0)]:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("still subscribed after the close")
    await client.aclose()
