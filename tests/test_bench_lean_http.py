"""The `capacity` scenario's lean HTTP client, against the test API and a server that breaks
off mid-answer: the same answers as httpx, connections kept alive, httpx's exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from inferq.bench.clients import InferqJobs, OpenAICompletions
from inferq.bench.lean_http import LeanClient
from inferq.catalog import ECHO_MODEL


@pytest.fixture
async def lean(client: httpx.AsyncClient) -> AsyncIterator[LeanClient]:
    lean = LeanClient.like(client)  # the test API, with the test key
    yield lean
    await lean.aclose()


def _body(prompt: str) -> dict[str, object]:
    return {"model": ECHO_MODEL, "prompt": prompt, "max_tokens": 3, "temperature": 0}


async def test_a_json_answer_matches_httpx_and_keeps_its_connection(
    client: httpx.AsyncClient, lean: LeanClient
) -> None:
    first = await lean.post("/v1/completions", json=_body("lean client one"))
    assert first.status_code == 200, first.content
    second = await lean.post("/v1/completions", json=_body("lean client one"))
    assert second.headers["x-inferq-cache"] == "hit-exact"
    reference = await client.post("/v1/completions", json=_body("lean client one"))
    assert second.json()["choices"] == reference.json()["choices"]
    assert len(lean._idle) == 1  # both requests went over one kept-alive connection


async def test_an_error_status_and_its_body_arrive(lean: LeanClient) -> None:
    response = await lean.post("/v1/completions", json={**_body("x"), "model": "no-such"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    missing = await lean.get("/v1/jobs/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_the_targets_run_on_it_through_sse_and_json(lean: LeanClient) -> None:
    jobs = InferqJobs(lean, ECHO_MODEL, cache_mode="exact")
    openai = OpenAICompletions("inferq-openai", lean, ECHO_MODEL)
    for target in (jobs, openai):
        streamed = await target.stream("lean client sse", 3, seed=7)
        once = await target.once("lean client sse", 3, seed=7)
        assert streamed.ok and once.ok, (streamed, once)
        assert streamed.tokens == once.tokens == 3
    # The SSE reader stops at `end`, before the chunked body's last chunk: drained, reused.
    assert len(lean._idle) == 1


async def _broken_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
    await writer.drain()
    writer.close()


async def _one_answer_per_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # kept alive, then not
    await writer.drain()
    writer.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    server = await asyncio.start_server(_one_answer_per_connection, "127.0.0.1", 0)
    lean = LeanClient(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        for _ in range(3):
            response = await lean.get("/")
            assert (response.status_code, response.content) == (200, b"ok")
            await asyncio.sleep(0.05)  # the server's FIN arrives while the connection idles
    finally:
        await lean.aclose()
        server.close()
        await server.wait_closed()


async def test_a_server_that_breaks_off_raises_httpx_errors() -> None:
    server = await asyncio.start_server(_broken_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lean = LeanClient(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(httpx.ReadError, match="IncompleteReadError"):
            await lean.get("/")
        assert lean._idle == []  # a broken connection is never reused
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await lean.get("/")  # nothing listens there any more
