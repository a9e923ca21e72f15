"""The Ollama surface through the official `ollama` package, and its NDJSON framing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.conftest import AUTH, wait_final


@pytest.fixture
def oll(stack: str) -> Iterator[ollama.Client]:
    client = ollama.Client(host=stack, timeout=120, headers=AUTH)
    yield client
    client.close()


async def test_chat_non_streaming(oll: ollama.Client, client: httpx.AsyncClient) -> None:
    response = await asyncio.to_thread(
        oll.chat,
        model="echo",
        messages=[{"role": "user", "content": "hello there"}],
        stream=False,
        options={"num_predict": 5, "temperature": 0},
    )
    assert response.message.role == "assistant"
    assert response.message.content == "user: hello there user: hello"
    assert response.done and response.done_reason == "length"
    assert (response.prompt_eval_count, response.eval_count) == (3, 5)
    assert response.total_duration and response.total_duration > 5 * 0.03 * 1e9
    assert response.eval_duration and 0 < response.eval_duration < response.total_duration
    assert isinstance(response.load_duration, int)
    assert response.created_at and response.created_at.endswith("Z")


async def test_generate_streaming(oll: ollama.Client) -> None:
    def run() -> list[ollama.GenerateResponse]:
        return list(
            oll.generate(
                model="echo:latest",
                prompt="a b c",
                raw=True,
                stream=True,
                options={"num_predict": 4, "stop": ["zzz"]},
            )
        )

    parts = await asyncio.to_thread(run)
    assert [p.done for p in parts] == [False] * 4 + [True]
    assert "".join(p.response or "" for p in parts) == "a b c a"
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 4


async def test_generate_uses_chat_template_unless_raw(oll: ollama.Client) -> None:
    out = await asyncio.to_thread(
        oll.generate, model="echo", prompt="hi", system="sys", options={"num_predict": 4}
    )
    assert out.response == "system: sys user: hi"


async def test_ndjson_framing_and_job(client: httpx.AsyncClient) -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "x y"}],
        "options": {"num_predict": 3},
    }
    async with client.stream("POST", "/api/chat", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        job_id = resp.headers["x-inferq-job-id"]
        raw = (await resp.aread()).decode()
    assert raw.endswith("\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert set(lines[0]) == {"model", "created_at", "message", "done"}
    assert {
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
        "done_reason",
    } <= set(lines[-1])
    assert lines[-1]["message"] == {"role": "assistant", "content": ""}
    job = await wait_final(client, job_id)
    assert job["status"] == "completed" and job["output"] == "user: x y"


async def test_stream_disconnect_cancels(client: httpx.AsyncClient) -> None:
    body = {"model": "echo", "prompt": "r " * 10, "raw": True, "options": {"num_predict": 300}}
    async with client.stream("POST", "/api/generate", json=body) as resp:
        job_id = resp.headers["x-inferq-job-id"]
        async for _ in resp.aiter_lines():
            break
    job = await wait_final(client, job_id, timeout=30)
    assert job["status"] == "cancelled"


async def test_listing_endpoints(oll: ollama.Client, client: httpx.AsyncClient) -> None:
    tags = await asyncio.to_thread(oll.list)
    names = {m.model for m in tags.models}
    assert {"echo:latest", "gemma-3-270m:latest"} <= names
    gemma = next(m for m in tags.models if m.model == "gemma-3-270m:latest")
    assert gemma.size and gemma.size > 100_000_000 and gemma.details is not None
    assert gemma.details.format == "gguf" and gemma.details.quantization_level == "Q4_K_M"
    shown = await asyncio.to_thread(oll.show, "gemma-3-270m")
    assert shown.details is not None and shown.details.family == "gemma3"
    assert shown.template and "<start_of_turn>" in shown.template
    assert shown.modelinfo and shown.modelinfo["gemma3.context_length"] == 2048
    running = await asyncio.to_thread(oll.ps)
    assert {"echo:latest", "gemma-3-270m:latest"} <= {m.model for m in running.models}
    version = (await client.get("/api/version")).json()
    assert isinstance(version["version"], str) and version["version"]


async def test_embed(oll: ollama.Client) -> None:
    out = await asyncio.to_thread(oll.embed, model="all-minilm", input=["first", "second"])
    assert len(out.embeddings) == 2 and all(len(v) == 384 for v in out.embeddings)
    assert out.prompt_eval_count and out.prompt_eval_count >= 4
    legacy = await asyncio.to_thread(oll.embeddings, model="all-minilm", prompt="first")
    assert legacy.embedding == pytest.approx(out.embeddings[0], abs=1e-5)


async def test_errors_in_ollama_shape(oll: ollama.Client, client: httpx.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        await asyncio.to_thread(oll.chat, model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404 and "not found" in missing.value.error
    bad = await client.post("/api/generate", content=b"{not json")
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    role = await client.post(
        "/api/chat", json={"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}
    )
    assert role.status_code == 400 and "role" in role.json()["error"]
    fmt = await client.post(
        "/api/generate", json={"model": "echo", "prompt": "x", "format": "json"}
    )
    assert fmt.status_code == 400 and set(fmt.json()) == {"error"}
    not_embedding = await client.post("/api/embed", json={"model": "echo", "input": "x"})
    assert not_embedding.status_code == 400
    load = await client.post("/api/generate", json={"model": "echo"})
    assert load.json()["done_reason"] == "load" and load.json()["done"] is True


async def test_request_id_header_on_ollama(client: httpx.AsyncClient) -> None:
    rid = f"oll-{uuid.uuid4().hex[:8]}"
    resp = await client.post(
        "/api/generate",
        json={
            "model": "echo",
            "prompt": "a",
            "raw": True,
            "stream": False,
            "options": {"num_predict": 1},
        },
        headers={"X-Request-ID": rid},
    )
    assert resp.headers["x-request-id"] == rid and resp.json()["response"] == "a"


@pytest.mark.slow
async def test_chat_on_the_real_model(oll: ollama.Client) -> None:
    response = await asyncio.to_thread(
        oll.chat,
        model="gemma-3-270m",
        messages=[{"role": "user", "content": "Say hello."}],
        options={"num_predict": 8, "seed": 1, "temperature": 0.5},
        stream=False,
    )
    again = await asyncio.to_thread(
        oll.chat,
        model="gemma-3-270m",
        messages=[{"role": "user", "content": "Say hello."}],
        options={"num_predict": 8, "seed": 1, "temperature": 0.5},
        stream=False,
    )
    assert response.message.content and response.message.content == again.message.content
    assert response.eval_count and 1 <= response.eval_count <= 8
    assert response.prompt_eval_duration and response.prompt_eval_duration > 0


@pytest.mark.slow
async def test_format_schema_on_the_real_model(oll: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"type": "string", "maxLength": 12}},
        "required": ["color"],
    }
    out = await asyncio.to_thread(
        oll.generate,
        model="gemma-3-270m",
        prompt="Name a color as JSON.",
        format=schema,
        options={"num_predict": 40, "temperature": 0},
        stream=False,
    )
    assert out.done_reason == "stop"
    assert isinstance(json.loads(out.response or "")["color"], str)


async def test_a_format_llama_cpp_cannot_compile_is_400(oll: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        await asyncio.to_thread(
            oll.generate, model="gemma-3-270m", prompt="x", format={"enum": []}, stream=False
        )
    assert refused.value.status_code == 400 and "format" in refused.value.error


async def test_the_cache_field_and_a_num_predict_past_the_context(
    client: httpx.AsyncClient,
) -> None:
    """`cache` was ignored here; a num_predict past the context was refused, where Ollama
    generates until the context is full."""
    body = {"model": "echo", "prompt": f"c {uuid.uuid4().hex}", "stream": False,
            "options": {"num_predict": 1}, "cache": {"mode": "off"}}  # fmt: skip
    for _ in range(2):
        response = await client.post("/api/generate", json=body)
        assert response.status_code == 200 and response.headers["x-inferq-cache"] == "miss"
    long = {**body, "prompt": "p", "options": {"num_predict": 10**6}, "stream": True}
    async with client.stream("POST", "/api/generate", json=long) as response:
        assert response.status_code == 200
        first = json.loads(await anext(response.aiter_lines()))
        assert first["done"] is False and "error" not in first
