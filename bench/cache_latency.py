"""Cache latency: L1 hit end to end, L2 hit with 100k entries indexed, a miss's semantic cost.

1. L1 hit through the running API: POST /v1/jobs of a warmed prompt (the response already
   says `completed` and `x-inferq-cache: hit-exact`), and POST + GET of the full answer.
2. Where an L1 hit's time goes, in-process: the lookup script, the job row's INSERT+COMMIT,
   the replay-log pipeline.
3. L2, in-process with the real service (Redis, PostgreSQL, MiniLM): 100,000 random unit
   vectors in the query's own partition (the worst case: nothing is filtered away), plus one
   real entry; a paraphrase lookup is timed (embedding, search, guard, answer fetch), and so
   are misses (the time a miss spends in the semantic lookup).

Run (the API and an echo worker up, same INFERQ_* env; a key of an unlimited tier, or
INFERQ_AUTH=off with INFERQ_DEFAULT_TIER=unlimited, so rate limits do not answer instead):
    .venv/bin/python bench/cache_latency.py --url http://127.0.0.1:8761
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import redis
import redis.asyncio as aioredis
from sqlalchemy import text

from inferq.cache.exact import CachedAnswer, ExactCache, fill_answer
from inferq.cache.index import IndexedEntry
from inferq.cache.service import CacheService
from inferq.cache.tenancy import tenant_var
from inferq.catalog import resolve_model
from inferq.db.models import Job
from inferq.db.session import make_engine, make_sessionmaker
from inferq.embeddings import Embedder
from inferq.queue.events import encode_event
from inferq.settings import get_settings

PARAMS: dict[str, Any] = {"max_tokens": 16, "temperature": 0.0, "top_p": 0.95, "stop": None}


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def line(name: str, samples: list[float]) -> str:
    return (
        f"{name}: p50 {pct(samples, 50):.2f} ms, p99 {pct(samples, 99):.2f} ms (n={len(samples)})"
    )


async def l1_http(url: str, n: int, api_key: str | None) -> None:
    body = {"model": "echo", "prompt": f"bench l1 {uuid.uuid4().hex}", "max_tokens": 16}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
        first = (await client.post("/v1/jobs", json=body)).json()
        while (await client.get(f"/v1/jobs/{first['id']}")).json()["status"] != "completed":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        post, full = [], []
        for i in range(n + 50):
            started = time.perf_counter()
            response = await client.post("/v1/jobs", json=body)
            posted = time.perf_counter()
            assert response.status_code == 202, response.text
            assert response.headers["x-inferq-cache"] == "hit-exact", response.headers
            job = (await client.get(f"/v1/jobs/{response.json()['id']}")).json()
            done = time.perf_counter()
            assert job["output"]
            if i >= 50:  # warm-up
                post.append(posted - started)
                full.append(done - started)
    print(line("L1 hit, POST /v1/jobs (response says completed)", post))
    print(line("L1 hit, POST + GET of the full answer", full))


async def l1_parts(cache: CacheService, client: aioredis.Redis, n: int) -> None:
    settings = get_settings()
    key = f"inferq:cache:l1:bench:echo:{uuid.uuid4().hex}"
    fill_answer(
        redis.Redis.from_url(settings.redis_url),
        key, "bench", CachedAnswer(["a"] * 16, "length", {"completion_tokens": 16}, "x"),
        600, time.time(), 1000,
    )  # fmt: skip
    exact = ExactCache(client)
    lookups, inserts, replays, synced = [], [], [], []
    events = [encode_event(i, "token", {"text": " word"}) for i in range(16)]
    for _ in range(n):
        t0 = time.perf_counter()
        assert await exact.get(key, "bench") is not None
        t1 = time.perf_counter()
        async with cache.sessions() as session:  # as a hit does
            session.add(_job())
            await session.commit()
        t2 = time.perf_counter()
        log_key = f"inferq:job:{uuid.uuid4()}:events"
        async with client.pipeline(transaction=True) as pipe:
            pipe.rpush(log_key, *events)
            pipe.expire(log_key, 60)
            await pipe.execute()
        t3 = time.perf_counter()
        async with cache.sessions() as session:  # for comparison: not waiting for the WAL flush
            await session.execute(text("SET LOCAL synchronous_commit = off"))
            session.add(_job())
            await session.commit()
        synced.append(time.perf_counter() - t3)
        lookups.append(t1 - t0)
        inserts.append(t2 - t1)
        replays.append(t3 - t2)
    print(line("  part: L1 lookup script (one round trip)", lookups))
    print(line("  part: hit job row INSERT + COMMIT", inserts))
    print(line("  part: replay log pipeline (17 events)", replays))
    print(line("  (the same, after SET LOCAL synchronous_commit = off)", synced))


def _job() -> Job:
    return Job(
        id=uuid.uuid4(), created_at=datetime.now(UTC), model="echo", engine="echo",
        status="completed", params=PARAMS, prompt="bench", prompt_tokens=1, attempts=0,
        output="x", finish_reason="length", cache="hit-exact",
    )  # fmt: skip


async def l2(cache: CacheService, entries: int, n: int) -> None:
    settings = get_settings()
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    tenant_var.set(tenant)
    spec = resolve_model(settings, "echo")
    stored = "What is the capital of France?"
    seed = await cache.lookup(spec, stored, None, PARAMS, semantic=True)
    assert seed.scope is not None and cache.embedder is not None
    # An empty partition defers the embedding (nothing to compare with): embed it here.
    seed.vector = await cache.embedder.embed(stored)
    assert seed.vector is not None
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((entries, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    far = time.time() + 3600
    for i, vector in enumerate(vectors):
        cache.index.add(seed.scope.partition, IndexedEntry(f"r{i}", "none", far, "x"), vector)
    fill_answer(
        redis.Redis.from_url(settings.redis_url), seed.scope.answer_key, tenant,
        CachedAnswer(["Paris."], "stop", {"completion_tokens": 2}, "x"), 600, time.time(), 10**6,
    )  # fmt: skip
    cache.index.add(
        seed.scope.partition, IndexedEntry("real", seed.scope.answer_key, far, stored), seed.vector
    )
    await cache.index.settle()  # past exact_max the partition trains its cells first
    probed = "by cells" if cache.index.is_probed(seed.scope.partition) else "exactly"
    print(f"L2 index: {cache.index.count(tenant)} entries in the query's partition, {probed}")
    hits, misses = [], []
    for i in range(n + 20):
        started = time.perf_counter()
        result = await cache.lookup(
            spec, "Which city is the capital of France?", None, PARAMS, semantic=True
        )
        elapsed = time.perf_counter() - started
        assert result.hit and result.marker and result.marker.startswith("hit-semantic")
        if i >= 20:
            hits.append(elapsed)
    for i in range(n):
        started = time.perf_counter()
        result = await cache.lookup(
            spec, f"Tell me about topic number {i} please", None, PARAMS, semantic=True
        )
        misses.append(time.perf_counter() - started)
        assert not result.hit
    print(line(f"L2 hit lookup (embed + search {entries} + guard + fetch)", hits))
    print(line("miss: L1 + semantic lookup (embed + search)", misses))
    query = seed.vector
    searches = []
    for _ in range(n):
        started = time.perf_counter()
        cache.index.search(seed.scope.partition, query, 0.85)
        searches.append(time.perf_counter() - started)
    print(line(f"  part: index search over {entries}", searches))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8761")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--api-key", default=None, help="when the API has INFERQ_AUTH=on")
    parser.add_argument("--skip-http", action="store_true", help="in-process parts only")
    parser.add_argument("--http-only", action="store_true", help="the L1 hit through the API")
    args = parser.parse_args()
    if not args.skip_http:
        await l1_http(args.url, args.n, args.api_key)
    if args.http_only:
        return
    settings = get_settings()
    db_engine = make_engine(settings)
    client = aioredis.Redis.from_url(settings.redis_url)
    cache = CacheService(settings, client, make_sessionmaker(db_engine))
    await l1_parts(cache, client, min(args.n, 500))
    embedder = Embedder(settings.model_dir)
    await embedder.wait_ready()
    await cache.start(embedder)
    await l2(cache, args.entries, min(args.n, 300))
    await cache.stop()
    await client.aclose()
    await db_engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
