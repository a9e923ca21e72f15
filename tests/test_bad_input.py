"""Every bad input gets a clear OpenAI-shaped error and enqueues nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from inferq.queue.names import queue_name
from inferq.settings import get_settings
from tests.conftest import read_sse, submit, wait_final


@pytest.fixture
async def nothing_enqueued(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Asserts that the test created no job row and put nothing on any queue."""
    client = aioredis.Redis.from_url(get_settings().redis_url)
    queues = [queue_name("echo", "echo"), queue_name("llamacpp", "gemma-3-270m")]

    async def snapshot() -> tuple[int, list[int]]:
        rows = await db.fetchval("SELECT count(*) FROM jobs")
        return rows, [await client.llen(q) for q in queues]

    before = await snapshot()
    yield
    assert await snapshot() == before
    await client.aclose()


def assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    assert error["message"]


GOOD: dict[str, Any] = {"model": "echo", "prompt": "hello", "max_tokens": 4}


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": "4"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"prompt": 42}, "prompt"),
        ({"model": ["echo"]}, "model"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"presence_penalty": "1"}, "presence_penalty"),
        ({"frequency_penalty": "1"}, "frequency_penalty"),
        ({"webhook_url": "http://[::1"}, "webhook_url"),
        ({"webhook_url": "https://example.com:99999/hook"}, "webhook_url"),
        ({"messages": [{"role": "wizard", "content": "hi"}], "prompt": None}, "messages.0.role"),
    ],
)
async def test_wrong_values_are_422_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], param: str
) -> None:
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(await client.post("/v1/jobs", json=body), 422, "invalid_value", param)


@pytest.mark.usefixtures("nothing_enqueued")
async def test_missing_model_is_422(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/jobs", json={"prompt": "x"}), 422, "invalid_value", "model")


@pytest.mark.usefixtures("nothing_enqueued")
async def test_neither_or_both_prompt_and_messages_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/jobs", json={"model": "echo"})
    assert response.status_code == 422
    both = {**GOOD, "messages": [{"role": "user", "content": "x"}]}
    assert (await client.post("/v1/jobs", json=both)).status_code == 422


@pytest.mark.usefixtures("nothing_enqueued")
async def test_max_tokens_above_model_limit_is_422(client: httpx.AsyncClient) -> None:
    limit = get_settings().context_length
    response = await client.post("/v1/jobs", json={**GOOD, "max_tokens": limit + 1})
    assert_error(response, 422, "invalid_value", "max_tokens")


@pytest.mark.usefixtures("nothing_enqueued")
async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/jobs", json={**GOOD, "model": "gpt-9"})
    assert_error(response, 404, "model_not_found", "model")


@pytest.mark.usefixtures("nothing_enqueued")
async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", content=b'{"model": "echo",', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_json", None)


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("content", "headers", "code"),
    [
        (b"null", {"content-type": "application/json"}, "invalid_type"),
        (b'["echo"]', {"content-type": "application/json"}, "invalid_type"),
        (b"", {"content-type": "application/json"}, "invalid_type"),
        (b'{"model": "echo"}', {"content-type": "text/plain"}, "invalid_type"),
        (b"model=echo", {"content-type": "application/x-www-form-urlencoded"}, "invalid_type"),
        (
            b"\x1f\x8b\x08\x00",
            {"content-type": "application/json", "content-encoding": "gzip"},
            "invalid_json",
        ),
        (b'{"model": "\xff"}', {"content-type": "application/json"}, "invalid_json"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], code: str
) -> None:
    """These were 422 "Input should be a valid dictionary" (or 400 http_error) with no hint."""
    response = await client.post("/v1/jobs", content=content, headers=headers)
    assert_error(response, 400, code, None)


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/jobs", {**GOOD, "prompt": "a\x00b"}),
        ("/v1/completions", {**GOOD, "prompt": "a\x00b"}),
        (
            "/v1/chat/completions",
            {"model": "echo", "messages": [{"role": "user", "content": "\x00"}]},
        ),
    ],
)
async def test_a_nul_character_is_400_not_a_backend_outage(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    """PostgreSQL text cannot hold NUL; that is the request's fault, not a 503 'retry later'."""
    assert_error(await client.post(path, json=body), 400, "unstorable_value", None)


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize("path", ["/v1/completions", "/api/generate", "/v1/jobs"])
async def test_a_lone_surrogate_is_refused_with_4xx(client: httpx.AsyncClient, path: str) -> None:
    """json.loads would accept "\\ud800" and leave a str that nothing can encode (a 500)."""
    raw = b'{"model": "echo", "prompt": "a\\ud800b", "max_tokens": 4, "stream": false}'
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    error = response.json()["error"]
    message = error if isinstance(error, str) else error["message"]  # Ollama: a plain string
    assert "JSON" in message or "unicode" in message.lower()


async def test_a_nul_the_model_writes_is_stored_and_streamed_as_a_replacement(
    client: httpx.AsyncClient,
) -> None:
    """Else its final write fails on every try and the job never ends (it did not in 120 s)."""
    accepted = await submit(client, model="echo", prompt="a <nul> b", max_tokens=3)
    job = await wait_final(client, accepted["id"])
    assert job["status"] == "completed", job
    assert job["output"] == "a \ufffd b"
    tokens = [e["text"] for e in await read_sse(client, accepted["id"]) if e["type"] == "token"]
    assert "".join(tokens) == job["output"]


@pytest.mark.usefixtures("nothing_enqueued")
async def test_prompt_longer_than_context_is_400(client: httpx.AsyncClient) -> None:
    limit = get_settings().context_length
    prompt = " ".join(["w"] * (limit - 10))
    response = await client.post("/v1/jobs", json={**GOOD, "prompt": prompt, "max_tokens": 20})
    assert_error(response, 400, "context_length_exceeded", "prompt")


@pytest.mark.slow
@pytest.mark.usefixtures("nothing_enqueued")
async def test_real_model_prompt_too_long_is_400(client: httpx.AsyncClient) -> None:
    prompt = "hello " * 3000
    body = {"model": "gemma-3-270m", "prompt": prompt, "max_tokens": 10}
    assert_error(await client.post("/v1/jobs", json=body), 400, "context_length_exceeded", "prompt")


@pytest.mark.usefixtures("nothing_enqueued")
async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    big = {**GOOD, "prompt": "x" * (get_settings().max_body_bytes + 1)}
    assert_error(await client.post("/v1/jobs", json=big), 413, "payload_too_large", None)


@pytest.mark.usefixtures("nothing_enqueued")
async def test_chunked_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "echo", "prompt": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large", None)


@pytest.mark.usefixtures("nothing_enqueued")
async def test_bad_roles_order_is_400(client: httpx.AsyncClient) -> None:
    messages = [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "x"}]
    body = {"model": "gemma-3-270m", "messages": messages, "max_tokens": 4}
    assert_error(await client.post("/v1/jobs", json=body), 400, "invalid_request", "messages")


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    for path in (
        f"/v1/jobs/{uuid.uuid4()}",
        "/v1/jobs/not-a-uuid",
        f"/v1/jobs/{uuid.uuid4()}/events",
    ):
        assert_error(await client.get(path), 404, "job_not_found", "id")
    assert_error(await client.post(f"/v1/jobs/{uuid.uuid4()}/cancel"), 404, "job_not_found", "id")


async def test_bad_cursor_and_last_event_id_are_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/jobs?cursor=zzz"), 400, "invalid_cursor", "cursor")
    job = (await client.post("/v1/jobs", json=GOOD)).json()
    response = await client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "abc"})
    assert_error(response, 400, "invalid_last_event_id", "Last-Event-ID")
    assert_error(await client.get("/v1/jobs?limit=1000"), 422, "invalid_value", "limit")
