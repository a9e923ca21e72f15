"""L1 through the jobs API: hits look like answers, parameters and bypasses miss, TTLs end."""

from __future__ import annotations

import asyncio

import httpx

from tests.cache_helpers import ask, new_tenant, stats, texts_of_sse

PROMPT = "the quick brown fox jumps over the lazy dog"


async def test_repeat_is_an_exact_hit_on_every_surface(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant("exact")
    header, first = await ask(client, tenant, prompt=PROMPT)
    assert header == "miss" and first["cache"] == "miss" and first["worker"] is not None
    header, hit = await ask(client, tenant, prompt=PROMPT)
    assert header == "hit-exact" and hit["cache"] == "hit-exact"
    assert hit["id"] != first["id"] and hit["status"] == "completed"
    assert hit["worker"] is None and hit["attempts"] == 0  # no worker ever saw it
    assert hit["output"] == first["output"] and hit["finish_reason"] == first["finish_reason"]
    assert hit["usage"] == first["usage"]
    assert hit["params"]["cache"] == {"source_job": first["id"]}
    # SSE streams the hit token by token, exactly as the generated answer streamed.
    assert await texts_of_sse(client, tenant, hit["id"]) == await texts_of_sse(
        client, tenant, first["id"]
    )
    layer = (await stats(client, tenant))["layers"]["exact"]
    assert (layer["entries"], layer["hits"], layer["misses"]) == (1, 1, 1)
    metrics = (await client.get("/metrics")).text
    assert 'inferq_cache_lookups_total{layer="exact",result="hit"}' in metrics


async def test_every_output_parameter_is_part_of_the_key(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant("params")
    base = {"prompt": "alpha beta gamma delta", "max_tokens": 5, "temperature": 0.0, "seed": 3}
    assert (await ask(client, tenant, **base))[0] == "miss"
    assert (await ask(client, tenant, **base))[0] == "hit-exact"
    changes = [
        {"max_tokens": 4},
        {"temperature": 0.7},
        {"top_p": 0.5},
        {"seed": 4},
        {"stop": ["gamma"]},
        {"presence_penalty": 0.5},
    ]
    for change in changes:
        header, job = await ask(client, tenant, **{**base, **change})
        assert header == "miss" and job["worker"] is not None, change
    # Whitespace is part of the exact key (it changes a base model's output); the semantic
    # layer may still call the two prompts the same, so ask the exact layer alone.
    spaced = {**base, "prompt": "alpha beta gamma delta ", "cache": {"mode": "exact"}}
    header, job = await ask(client, tenant, **spaced)
    assert header == "miss" and job["worker"] is not None


async def test_ttl_expiry(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant("ttl")
    body = {"prompt": "short lived answer", "cache": {"mode": "exact", "ttl": 1}}
    assert (await ask(client, tenant, **body))[0] == "miss"
    assert (await ask(client, tenant, **body))[0] == "hit-exact"
    await asyncio.sleep(2.1)
    header, job = await ask(client, tenant, **body)
    assert header == "miss" and job["worker"] is not None


async def test_no_cache_skips_the_lookup_but_stores(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant("nocache")
    assert (await ask(client, tenant, prompt=PROMPT))[0] == "miss"
    header, fresh = await ask(client, tenant, {"Cache-Control": "no-cache"}, prompt=PROMPT)
    assert header == "miss" and fresh["worker"] is not None and fresh["cache"] == "bypass"
    header, hit = await ask(client, tenant, prompt=PROMPT)
    assert header == "hit-exact" and hit["params"]["cache"]["source_job"] == fresh["id"]


async def test_no_store_and_mode_off_store_nothing(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant("nostore")
    header, _ = await ask(client, tenant, {"Cache-Control": "no-store"}, prompt="one two")
    assert header == "miss"
    assert (await ask(client, tenant, prompt="one two"))[0] == "miss"
    assert (await ask(client, tenant, prompt="three four", cache={"mode": "off"}))[1][
        "cache"
    ] is None
    header, job = await ask(client, tenant, prompt="three four")
    assert header == "miss" and job["worker"] is not None
    # no-store still looks up: the answer stored just above serves it.
    assert (await ask(client, tenant, {"Cache-Control": "no-store"}, prompt="one two"))[0] == (
        "hit-exact"
    )


async def test_bad_cache_field_is_refused(client: httpx.AsyncClient) -> None:
    for cache in ({"mode": "always"}, {"ttl": 0}, {"ttl": 10**9}, {"mod": "off"}):
        response = await client.post(
            "/v1/jobs", json={"model": "echo", "prompt": "x", "cache": cache}
        )
        assert response.status_code in (400, 422), (cache, response.text)
        assert set(response.json()["error"]) >= {"message", "type", "param", "code"}


async def test_purge_per_tenant(client: httpx.AsyncClient) -> None:
    keep, gone = await new_tenant("keep"), await new_tenant("gone")
    for tenant in (keep, gone):
        assert (await ask(client, tenant, prompt="purge me please"))[0] == "miss"
    response = await client.delete("/v1/admin/cache", headers=gone.auth)
    assert response.status_code == 200 and response.json()["removed"]["exact"] == 1
    assert (await ask(client, gone, prompt="purge me please"))[0] == "miss"
    assert (await ask(client, keep, prompt="purge me please"))[0] == "hit-exact"
    # A tenant's admin key cannot reach another tenant's cache.
    response = await client.delete(
        "/v1/admin/cache", params={"tenant": keep.name}, headers=gone.auth
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "tenant_out_of_scope"
