"""The cache service called directly, as two tenants: real Redis, PostgreSQL and MiniLM.

The worker's real fill function stores tenant A's answers; tenant B's identical and
paraphrased lookups must come back empty while A's come back with A's canary.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import select

from inferq.cache.exact import CachedAnswer
from inferq.cache.fill import fill_cache
from inferq.cache.models import CacheEntry
from inferq.cache.policy import policy_of
from inferq.cache.service import CacheLookup, CacheService, answered_events
from inferq.cache.tenancy import tenant_var
from inferq.catalog import resolve_model
from inferq.db.models import Job, JobStatus
from inferq.db.session import make_engine, make_sessionmaker
from inferq.embeddings import Embedder
from inferq.queue.events import decode_event
from inferq.queue.names import event_log_key
from inferq.settings import get_settings

PARAMS: dict[str, Any] = {"max_tokens": 6, "temperature": 0.0, "top_p": 0.95, "stop": None}
QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"


@pytest.fixture(scope="module")
async def service(settings_env: None) -> AsyncIterator[CacheService]:
    settings = get_settings()
    db_engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    embedder = Embedder(settings.model_dir)
    await embedder.wait_ready()
    cache = CacheService(settings, client, make_sessionmaker(db_engine))
    await cache.start(embedder)
    yield cache
    await cache.stop()
    await client.aclose()
    await db_engine.dispose()


async def _lookup(cache: CacheService, tenant: str, prompt: str) -> CacheLookup:
    token = tenant_var.set(tenant)
    try:
        return await cache.lookup(
            resolve_model(cache.settings, "echo"), prompt, None, PARAMS, semantic=True
        )
    finally:
        tenant_var.reset(token)


async def _answer(
    cache: CacheService, tenant: str, prompt: str, text: str, *, fill_first: bool = False
) -> None:
    """What submit_job and the worker do for a miss that completes with `text`.

    `fill_first`: the worker fills the answer before the API has written the L2 row.
    """
    lookup = await _lookup(cache, tenant, prompt)
    assert not lookup.hit and (lookup.vector is not None or lookup.later_entry is not None)
    job = Job(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        model="echo",
        engine="echo",
        status=JobStatus.QUEUED.value,
        params=dict(PARAMS),
        prompt=prompt,
        prompt_tokens=7,
        attempts=1,
    )
    async with cache.sessions() as session:
        await cache.attach(session, lookup, job)
        session.add(job)
        await session.commit()
        values = {"status": "completed", "finish_reason": "stop", "output": text}
        values["usage"] = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
        job.status, job.output, job.finish_reason = "completed", text, "stop"
        job.finished_at = datetime.now(UTC)
        await session.commit()
    later = cache.store_entry_later(lookup, job)  # as submit_job does once the job is queued
    if later is not None and not fill_first:
        await later
    fill_cache(redis.Redis.from_url(cache.settings.redis_url), job, values, [text])
    if later is not None:
        await later


async def test_two_tenants_through_the_service(service: CacheService) -> None:
    a, b = f"svc-a-{uuid.uuid4().hex[:6]}", f"svc-b-{uuid.uuid4().hex[:6]}"
    canary = f"CANARY-{a}"
    await _answer(service, a, QUESTION, canary)
    async with asyncio.timeout(5):
        while service.index.count(a) < 1:
            await asyncio.sleep(0.01)
    exact = await _lookup(service, a, QUESTION)
    semantic = await _lookup(service, a, PARAPHRASE)
    assert exact.marker == "hit-exact" and exact.answer and exact.answer.text == canary
    assert semantic.marker and semantic.marker.startswith("hit-semantic")
    assert semantic.answer and semantic.answer.text == canary
    for prompt in (QUESTION, PARAPHRASE):
        other = await _lookup(service, b, prompt)
        assert not other.hit and other.answer is None and other.marker == "miss"
    assert service.index.count(b) == 0
    # B's own answer lives beside A's and does not disturb it.
    await _answer(service, b, QUESTION, "B's own answer")
    again = await _lookup(service, a, QUESTION)
    assert again.answer is not None and again.answer.text == canary


@pytest.mark.parametrize("fill_first", [False, True], ids=["row-first", "fill-first"])
async def test_a_first_miss_writes_its_entry_after_queueing(
    service: CacheService, fill_first: bool
) -> None:
    """An empty partition has nothing to match: the miss does not wait for its embedding,
    and its L2 row still gets indexed whichever of the row and the fill comes first."""
    tenant = f"later-{uuid.uuid4().hex[:6]}"
    first = await _lookup(service, tenant, QUESTION)
    assert first.later_entry is not None and first.vector is None and first.marker == "miss"
    await _answer(service, tenant, QUESTION, f"CANARY-{tenant}", fill_first=fill_first)
    async with asyncio.timeout(5):
        while service.index.count(tenant) < 1:
            await asyncio.sleep(0.01)
    paraphrase = await _lookup(service, tenant, PARAPHRASE)  # now the partition has an entry
    assert paraphrase.later_entry is None and paraphrase.answer is not None
    assert paraphrase.answer.text == f"CANARY-{tenant}"


async def test_a_resync_loads_only_the_entries_it_does_not_hold(service: CacheService) -> None:
    tenant = f"resync-{uuid.uuid4().hex[:6]}"
    await _answer(service, tenant, QUESTION, f"CANARY-{tenant}")
    async with asyncio.timeout(5):
        while service.index.count(tenant) < 1:
            await asyncio.sleep(0.01)
    async with service.sessions() as session:
        entry_id = await session.scalar(select(CacheEntry.id).where(CacheEntry.tenant == tenant))
    service.index.remove(str(entry_id))  # as if its announcement had been lost
    assert not (await _lookup(service, tenant, PARAPHRASE)).hit
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert await service.sync.catch_up(since) >= 1
    again = await _lookup(service, tenant, PARAPHRASE)
    assert again.answer is not None and again.answer.text == f"CANARY-{tenant}"
    assert await service.sync.catch_up(since) == 0  # everything it reads is indexed already


def test_per_tenant_bound_evicts_the_oldest(settings_env: None) -> None:
    from inferq.cache.exact import CachedAnswer, fill_answer
    from inferq.cache.keys import quote_segment
    from inferq.queue.names import cache_answer_key, cache_tenant_index_key

    client = redis.Redis.from_url(get_settings().redis_url)
    tenant, other = f"bound-{uuid.uuid4().hex[:6]}", f"bound-{uuid.uuid4().hex[:6]}"
    answer = CachedAnswer(["x"], "stop", {"completion_tokens": 1}, "job")
    keys = [cache_answer_key(quote_segment(tenant), "echo", f"d{i}") for i in range(5)]
    fill_answer(
        client, cache_answer_key(quote_segment(other), "echo", "o"), other, answer, 60, 0, 3
    )
    for i, key in enumerate(keys):
        # Later expiry = newer entry; the bound keeps the 3 that expire last.
        fill_answer(client, key, tenant, answer, 60 + i, 1_000_000_000, 3)
    assert [bool(client.exists(k)) for k in keys] == [False, False, True, True, True]
    assert client.zcard(cache_tenant_index_key(quote_segment(tenant))) == 3
    assert client.exists(cache_answer_key(quote_segment(other), "echo", "o"))  # untouched


async def test_purge_by_model_within_a_tenant(service: CacheService) -> None:
    tenant = f"purge-{uuid.uuid4().hex[:6]}"
    await _answer(service, tenant, "purge this question please", "gone soon")
    async with asyncio.timeout(5):
        while service.index.count(tenant) < 1:
            await asyncio.sleep(0.01)
    assert (await service.store.purge(tenant, "gemma-3-270m")) == {"exact": 0, "semantic": 0}
    assert (await service.store.purge(tenant, "echo")) == {"exact": 1, "semantic": 1}
    assert service.index.count(tenant) == 0
    assert not (await _lookup(service, tenant, "purge this question please")).hit


async def test_a_long_hit_replays_every_piece_in_order_with_its_ttl(service: CacheService) -> None:
    # More pieces than the replay script pushes at once (Lua's unpack has a stack limit).
    pieces = [f"piece {i} " for i in range(9000)]
    answer = CachedAnswer(pieces, "length", {"completion_tokens": 9000}, source_job="src")
    policy = policy_of(service.settings, None, None, None)
    lookup = CacheLookup(policy, None, answer=answer, marker="hit-exact")
    job = Job(id=uuid.uuid4(), prompt_tokens=3, cache="hit-exact", finish_reason="length")
    job.usage = {"prompt_tokens": 3, "completion_tokens": 9000, "total_tokens": 9003}
    await service.replay(job, lookup)
    key = event_log_key(str(job.id))
    client = redis.Redis.from_url(service.settings.redis_url)
    logged = [decode_event(raw) for raw in client.lrange(key, 0, -1)]
    assert logged == answered_events(job)
    assert [e["text"] for e in logged[:-1]] == pieces
    assert logged[-1]["type"] == "end" and logged[-1]["cache"] == "hit-exact"
    assert 0 < client.ttl(key) <= service.settings.event_log_ttl_s
