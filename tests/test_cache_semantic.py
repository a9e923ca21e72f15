"""L2 through the API: paraphrases hit, look-alikes miss, tenants never see each other,
and a second API process indexes an entry written through the first within a second."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis

from inferq.cache.exact import CachedAnswer
from inferq.settings import get_settings
from tests.cache_helpers import (
    ask,
    new_tenant,
    stats,
    texts_of_sse,
    wait_indexed,
    wait_semantic_ready,
)
from tests.conftest import API_PORT, AUTH
from tests.stack import start_api

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is the capital of France?"
LOOK_ALIKE = "What is the capital of Germany?"


@pytest.fixture
async def ready(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await wait_semantic_ready(client)
    return client


async def test_paraphrase_hits_and_look_alike_misses(ready: httpx.AsyncClient) -> None:
    client, tenant = ready, await new_tenant("sem")
    header, first = await ask(client, tenant, prompt=QUESTION)
    assert header == "miss"
    await wait_indexed(client, tenant)
    header, hit = await ask(client, tenant, prompt=PARAPHRASE)
    assert header.startswith("hit-semantic; similarity=0.") and hit["cache"] == header
    assert float(header.split("=")[1]) >= get_settings().cache_semantic_threshold
    # The echo model repeats its prompt: the answer is the first question's, not a new one.
    assert hit["output"] == first["output"] and hit["worker"] is None
    assert await texts_of_sse(client, tenant, hit["id"]) == await texts_of_sse(
        client, tenant, first["id"]
    )
    header, other = await ask(client, tenant, prompt=LOOK_ALIKE)
    assert header == "miss" and "Germany" in other["output"]


async def test_chat_needs_the_same_system_prompt(ready: httpx.AsyncClient) -> None:
    client, tenant = ready, await new_tenant("chat")

    def chat(system: str, user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    assert (await ask(client, tenant, messages=chat("Be brief.", QUESTION)))[0] == "miss"
    await wait_indexed(client, tenant)
    assert (await ask(client, tenant, messages=chat("Be brief.", PARAPHRASE)))[0].startswith(
        "hit-semantic"
    )
    assert (await ask(client, tenant, messages=chat("Be verbose.", PARAPHRASE)))[0] == "miss"


async def test_mode_exact_leaves_l2_alone(ready: httpx.AsyncClient) -> None:
    client, tenant = ready, await new_tenant("exactonly")
    assert (await ask(client, tenant, prompt=QUESTION, cache={"mode": "exact"}))[0] == "miss"
    assert (await ask(client, tenant, prompt=PARAPHRASE))[0] == "miss"
    await wait_indexed(client, tenant)  # the paraphrase's own entry
    assert (await stats(client, tenant))["layers"]["semantic"]["entries"] == 1


async def test_tenants_never_see_each_other(ready: httpx.AsyncClient) -> None:
    client = ready
    a, b = await new_tenant("a"), await new_tenant("b")
    _, warm = await ask(client, a, prompt=QUESTION)
    await wait_indexed(client, a)
    # Put a canary in A's cached answer: anything that serves A's cache now says so.
    canary = f"CANARY-{a.name}"
    r = redis.Redis.from_url(get_settings().redis_url)
    key = warm["params"]["cache"]["key"]
    stored = CachedAnswer.decode(r.get(key))
    r.set(
        key, CachedAnswer([canary], "stop", stored.usage, stored.source_job).encode(), keepttl=True
    )
    header, own = await ask(client, a, prompt=QUESTION)
    assert header == "hit-exact" and own["output"] == canary
    header, own_paraphrase = await ask(client, a, prompt=PARAPHRASE)
    assert header.startswith("hit-semantic") and own_paraphrase["output"] == canary
    b_jobs: list[str] = []
    for prompt in (QUESTION, PARAPHRASE):
        header, job = await ask(client, b, prompt=prompt)
        assert canary not in job["output"]
        texts, _ = await texts_of_sse(client, b, job["id"])
        assert canary not in "".join(texts)
        # B's paraphrase may hit B's own first answer, never anything of A's.
        assert header == "miss" or job["params"]["cache"]["source_job"] in b_jobs, header
        b_jobs.append(job["id"])
    assert (await stats(client, b))["layers"]["exact"]["hits"] == 0


@pytest.fixture
async def second_api(ready: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    proc = start_api(API_PORT + 1, name="api2")
    try:
        base = f"http://127.0.0.1:{API_PORT + 1}"
        async with httpx.AsyncClient(base_url=base, timeout=60, headers=AUTH) as c:
            await wait_semantic_ready(c)
            yield c
    finally:
        proc.stop()


async def test_second_api_process_sees_a_new_entry_within_a_second(
    ready: httpx.AsyncClient, second_api: httpx.AsyncClient
) -> None:
    tenant = await new_tenant("sync")
    before = (await stats(second_api, tenant))["layers"]["semantic"]["entries"]
    assert before == 0
    _, first = await ask(ready, tenant, prompt=QUESTION)
    seen_done = time.monotonic()
    elapsed = await wait_indexed(second_api, tenant, timeout=5)
    assert time.monotonic() - seen_done < 1.0, elapsed
    header, hit = await ask(second_api, tenant, prompt=PARAPHRASE)
    assert header.startswith("hit-semantic") and hit["output"] == first["output"]


@pytest.mark.slow
async def test_real_model_hit_streams_like_the_answer(ready: httpx.AsyncClient) -> None:
    client, tenant = ready, await new_tenant("gemma")
    body = {"model": "gemma-3-270m", "max_tokens": 8, "temperature": 0.0}
    header, first = await ask(client, tenant, prompt="The capital of France is", **body)
    assert header == "miss" and first["status"] == "completed" and first["output"]
    header, hit = await ask(client, tenant, prompt="The capital of France is", **body)
    assert header == "hit-exact" and hit["output"] == first["output"]
    tokens, finish = await texts_of_sse(client, tenant, hit["id"])
    assert (tokens, finish) == await texts_of_sse(client, tenant, first["id"])
    assert len(tokens) > 1  # a hit streams in pieces, not as one blob
    await wait_indexed(client, tenant)
    header, para = await ask(client, tenant, prompt="The capital city of France is", **body)
    assert header.startswith("hit-semantic") and para["output"] == first["output"]
    assert (
        json.loads(json.dumps(para["usage"]))["completion_tokens"]
        == first["usage"]["completion_tokens"]
    )
