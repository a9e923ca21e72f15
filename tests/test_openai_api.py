"""The OpenAI surface through the official `openai` package (echo model: fast, exact)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import openai
import pytest

from tests.auth_helpers import bearer, create_key, create_tenant
from tests.conftest import API_KEY, AUTH, _pg_dsn, wait_final


@pytest.fixture
def oai(stack: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
async def aoai(stack: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_chat_sync_is_a_job(oai: openai.OpenAI, client: httpx.AsyncClient) -> None:
    raw = await asyncio.to_thread(
        oai.chat.completions.with_raw_response.create,
        model="echo",
        messages=user("alpha beta gamma"),
        max_tokens=4,
    )
    completion = raw.parse()
    job_id = raw.headers["x-inferq-job-id"]
    assert completion.object == "chat.completion"
    assert completion.id == f"chatcmpl-{uuid.UUID(job_id).hex}"
    # the echo tokenizer renders "user: <content>", the echo engine repeats those words
    assert completion.choices[0].message.content == "user: alpha beta gamma"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 4)
    job = await wait_final(client, job_id)
    assert job["status"] == "completed" and job["output"] == "user: alpha beta gamma"
    listed = (await client.get("/v1/jobs", params={"limit": 100})).json()["data"]
    assert job_id in {j["id"] for j in listed}


async def test_chat_async_stream_with_usage(aoai: openai.AsyncOpenAI) -> None:
    stream = await aoai.chat.completions.create(
        model="echo",
        messages=user("one two three"),
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "user: one two three user: one"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].usage.total_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    await aoai.close()


async def test_sse_framing_and_headers(client: httpx.AsyncClient) -> None:
    body = {"model": "echo", "messages": user("a b"), "max_tokens": 3, "stream": True}
    headers = {"X-Request-ID": f"sse-{uuid.uuid4().hex[:8]}"}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-request-id"] == headers["X-Request-ID"]
        assert uuid.UUID(resp.headers["x-inferq-job-id"])
        raw = (await resp.aread()).decode()
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    payloads = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    assert all(f.startswith("data: ") for f in frames[:-1])
    assert payloads[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }
    assert payloads[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert "usage" not in payloads[0], "usage appears only with include_usage"
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)


async def test_n_choices_are_sibling_jobs(oai: openai.OpenAI, db: asyncpg.Connection) -> None:
    raw = await asyncio.to_thread(
        oai.chat.completions.with_raw_response.create,
        model="echo",
        messages=user("x y z"),
        max_tokens=3,
        n=3,
        seed=7,
        temperature=1.0,
    )
    completion = raw.parse()
    ids = raw.headers["x-inferq-job-ids"].split(",")
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert len(ids) == 3 and ids[0] == raw.headers["x-inferq-job-id"]
    rows = await db.fetch(
        "SELECT id, group_id, choice_index, params FROM jobs WHERE group_id = $1 "
        "ORDER BY choice_index",
        uuid.UUID(raw.headers["x-inferq-group-id"]),
    )
    assert [str(r["id"]) for r in rows] == ids
    assert [json.loads(r["params"])["seed"] for r in rows] == [7, 8, 9]
    assert completion.usage is not None and completion.usage.completion_tokens == 9


async def test_n_choices_stream(aoai: openai.AsyncOpenAI) -> None:
    stream = await aoai.chat.completions.create(
        model="echo", messages=user("p q"), max_tokens=3, n=2, stream=True
    )
    texts = {0: "", 1: ""}
    finished = set()
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert texts == {0: "user: p q", 1: "user: p q"} and finished == {0, 1}
    await aoai.close()


async def test_seed_and_stop(oai: openai.OpenAI) -> None:
    def run(seed: int) -> str:
        completion = oai.chat.completions.create(
            model="echo",
            messages=user("a b c d e f g h"),
            max_tokens=9,
            seed=seed,
            temperature=0.7,
        )
        return completion.choices[0].message.content or ""

    first, again, other = await asyncio.gather(*(asyncio.to_thread(run, s) for s in (5, 5, 6)))
    assert first == again and first != other
    stopped = await asyncio.to_thread(
        oai.chat.completions.create,
        model="echo",
        messages=user("red green blue"),
        max_tokens=8,
        stop=["blue", "nothing"],
    )
    assert stopped.choices[0].message.content == "user: red green "
    assert stopped.choices[0].finish_reason == "stop"


async def test_text_parts_and_developer_role_accepted(oai: openai.OpenAI) -> None:
    completion = await asyncio.to_thread(
        oai.chat.completions.create,
        model="echo",
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}],
            },
        ],
        max_tokens=6,
        extra_body={"some_future_field": 1},
    )
    # echo renders "role: content" lines; its tokens are the words of that text
    assert completion.choices[0].message.content == "system: be brief user: hi there"


async def test_completions_prompt_form(oai: openai.OpenAI, aoai: openai.AsyncOpenAI) -> None:
    completion = await asyncio.to_thread(
        oai.completions.create, model="echo", prompt="to be or", max_tokens=4, echo=True
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "to be orto be or to"
    assert completion.choices[0].finish_reason == "length"
    stream = await aoai.completions.create(
        model="echo",
        prompt="k l",
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "k l k"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    await aoai.close()


@pytest.mark.parametrize(
    ("messages", "param", "code"),
    [
        ("hello", "messages", "invalid_type"),
        ([], "messages", "empty_array"),
        (["hello"], "messages[0]", "invalid_type"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role", "invalid_value"),
        ([{"role": "tool", "content": "x"}], "messages[0].role", "unsupported_role"),
        ([{"role": "user"}], "messages[0].content", "missing_required_parameter"),
        (
            [
                {"role": "user", "content": "ok"},
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                },
            ],
            "messages[2].content[1].type",
            "unsupported_content",
        ),
    ],
)
async def test_bad_messages_are_400_with_param(
    oai: openai.OpenAI, client: httpx.AsyncClient, messages: object, param: str, code: str
) -> None:
    before = (await client.get("/v1/jobs", params={"limit": 1})).json()["data"]
    with pytest.raises(openai.BadRequestError) as caught:
        await asyncio.to_thread(
            oai.chat.completions.create,
            model="echo",
            messages=messages,  # type: ignore[arg-type]
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error" and error["message"]
    after = (await client.get("/v1/jobs", params={"limit": 1})).json()["data"]
    assert before == after, "nothing enqueued"


async def test_other_bad_input(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await asyncio.to_thread(
            oai.chat.completions.create, model="no-such-model", messages=user("x")
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as hot:
        await asyncio.to_thread(
            oai.chat.completions.create, model="echo", messages=user("x"), temperature=3.5
        )
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as many:
        await asyncio.to_thread(oai.chat.completions.create, model="echo", messages=user("x"), n=5)
    assert many.value.param == "n"
    with pytest.raises(openai.BadRequestError) as fmt:
        await asyncio.to_thread(
            oai.chat.completions.create,
            model="echo",
            messages=user("x"),
            response_format={"type": "json_object"},
        )
    assert fmt.value.param == "response_format" and fmt.value.code == "unsupported_parameter"


async def test_request_id_echoed_stored_and_409_in_flight(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    rid = f"rid-{uuid.uuid4().hex[:12]}"
    slow = {"model": "echo", "messages": user("w " * 10), "max_tokens": 40, "stream": True}
    with openai.OpenAI(
        base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0, default_headers={"Request-Id": rid}
    ) as oai:
        async with client.stream(
            "POST", "/v1/chat/completions", json=slow, headers={"X-Request-ID": rid}
        ) as first:
            assert first.headers["x-request-id"] == rid
            with pytest.raises(openai.ConflictError) as conflict:
                await asyncio.to_thread(
                    oai.chat.completions.create, model="echo", messages=user("x"), max_tokens=1
                )
            assert conflict.value.code == "request_id_in_use"
            job_id = first.headers["x-inferq-job-id"]
            await first.aread()
        row = await db.fetchrow("SELECT request_id FROM jobs WHERE id = $1", uuid.UUID(job_id))
        assert row is not None and row["request_id"] == rid
        # the first one is over: the id is free again, and the Request-Id spelling works too
        raw = await asyncio.to_thread(
            oai.chat.completions.with_raw_response.create,
            model="echo",
            messages=user("x"),
            max_tokens=1,
            user="user-42",
        )
        assert raw.headers["x-request-id"] == rid
        second = uuid.UUID(raw.headers["x-inferq-job-id"])
        row = await db.fetchrow("SELECT request_id, end_user FROM jobs WHERE id = $1", second)
        assert row is not None and (row["request_id"], row["end_user"]) == (rid, "user-42")


async def test_idempotency_key(oai: openai.OpenAI, db: asyncpg.Connection) -> None:
    key = f"idem-{uuid.uuid4().hex}"

    def create(text: str, tokens: int = 30) -> object:
        return oai.chat.completions.with_raw_response.create(
            model="echo",
            messages=user(text),
            max_tokens=tokens,
            extra_headers={"Idempotency-Key": key},
        )

    first_task = asyncio.create_task(asyncio.to_thread(create, "same body"))
    await asyncio.sleep(0.3)
    with pytest.raises(openai.ConflictError) as in_flight:
        await asyncio.to_thread(create, "same body")
    assert in_flight.value.code == "idempotency_key_in_use"
    first = await first_task
    replay = await asyncio.to_thread(create, "same body")
    assert replay.headers["x-inferq-idempotent-replay"] == "true"  # type: ignore[attr-defined]
    assert replay.parse().model_dump() == first.parse().model_dump()  # type: ignore[attr-defined]
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        await asyncio.to_thread(create, "another body")
    assert reused.value.code == "idempotency_key_reused"
    count = await db.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", key)
    assert count == 1, "one generation only"


async def test_stream_disconnect_cancels_job(client: httpx.AsyncClient) -> None:
    body = {"model": "echo", "messages": user("z " * 20), "max_tokens": 200, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        job_id = resp.headers["x-inferq-job-id"]
        seen = 0
        async for line in resp.aiter_lines():
            seen += line.startswith("data: ")
            if seen >= 3:
                break
    job = await wait_final(client, job_id, timeout=30)
    assert job["status"] == "cancelled"
    assert job["usage"]["completion_tokens"] < 200


async def test_nonstream_disconnect_cancels_job(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = {"model": "echo", "messages": user("q " * 20), "max_tokens": 200}
    rid = f"gone-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=stack, timeout=0.8, headers=AUTH) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("/v1/chat/completions", json=body, headers={"X-Request-ID": rid})
    job_id = await db.fetchval("SELECT id FROM jobs WHERE request_id = $1", rid)
    job = await wait_final(client, str(job_id), timeout=30)
    assert job["status"] == "cancelled"
    assert job["usage"]["completion_tokens"] < 200


async def test_a_retry_after_a_timeout_runs_again_under_its_idempotency_key(
    stack: str, client: httpx.AsyncClient
) -> None:
    """The first request's client left, so its job was cancelled: the retry that the key
    exists for used to get 409 job_cancelled for the key's whole lifetime."""
    body = {"model": "echo", "messages": user("r " * 20), "max_tokens": 60}  # 1.8 s
    headers = {**AUTH, "Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    async with httpx.AsyncClient(base_url=stack, timeout=0.8, headers=headers) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("/v1/chat/completions", json=body)
    short = {**body, "max_tokens": 3}  # the same key with another body is refused, as before
    assert (
        await client.post("/v1/chat/completions", json=short, headers=headers)
    ).status_code == 422
    async with asyncio.timeout(30):
        while True:  # 409 until the cancelled job has stopped, then it runs anew
            retry = await client.post(
                "/v1/chat/completions", json=body, headers=headers, timeout=120
            )
            if retry.status_code != 409 or retry.json()["error"]["code"] == "job_cancelled":
                break
            await asyncio.sleep(0.2)
    assert retry.status_code == 200, retry.text
    assert "x-inferq-idempotent-replay" not in retry.headers
    assert retry.json()["choices"][0]["finish_reason"] == "length"
    replay = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert replay.headers["x-inferq-idempotent-replay"] == "true"
    assert replay.json()["choices"] == retry.json()["choices"]


async def test_models_only_live(oai: openai.OpenAI) -> None:
    ids = {m.id for m in await asyncio.to_thread(lambda: list(oai.models.list()))}
    assert {"echo", "gemma-3-270m"} <= ids
    model = await asyncio.to_thread(oai.models.retrieve, "echo")
    assert model.id == "echo" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(oai.models.retrieve, "mlx-nothing")


def test_usage_counts_a_choice_whose_usage_is_null_as_zero() -> None:
    # A job whose replay log expired is rebuilt from its row, whose usage may be null.
    from types import SimpleNamespace
    from typing import Any

    from inferq.api.openai import service
    from inferq.api.openai.jobrun import ChoiceResult

    jobs: Any = [SimpleNamespace(prompt_tokens=5)]
    ended = [ChoiceResult(index=0, end={"type": "end", "usage": None})]
    assert service._usage(jobs, ended).model_dump() == {
        "prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5,
    }  # fmt: skip


async def test_a_request_refused_at_a_later_choice_leaves_no_job_running(stack: str) -> None:
    """n=3 on a key allowed 2 concurrent jobs: choices 0 and 1 were queued, then the 429."""
    tenant_id, _ = await create_tenant(_pg_dsn(), f"n-refused-{uuid.uuid4().hex[:8]}")
    key = await create_key(_pg_dsn(), tenant_id, limits=(None, None, 2))
    body = {"model": "echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 200}
    async with httpx.AsyncClient(base_url=stack, headers=bearer(key), timeout=60) as c:
        refused = await c.post("/v1/chat/completions", json={**body, "n": 3})
        assert refused.status_code == 429, refused.text
        jobs = (await c.get("/v1/jobs")).json()["data"]
        assert len(jobs) == 2 and {job["status"] for job in jobs} == {"cancelled"}
        # The cancelled choices hold none of the key's two slots.
        alone = await c.post("/v1/jobs", json={**body, "max_tokens": 1})
        assert alone.status_code == 202, alone.text


async def test_the_cache_body_field_and_the_context_bound(client: httpx.AsyncClient) -> None:
    """`cache` was dropped as an unknown field here (only /v1/jobs read it); a max_tokens past
    the context was REST's 422, where OpenAI's clients expect 400."""
    body = {"model": "echo", "messages": user(f"c {uuid.uuid4().hex}"), "max_tokens": 1}
    off = {**body, "cache": {"mode": "off"}}
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=off)
        assert response.headers["x-inferq-cache"] == "miss"
    assert (await client.post("/v1/chat/completions", json=body)).headers[
        "x-inferq-cache"
    ] == "miss"
    hit = await client.post("/v1/chat/completions", json=body)
    assert hit.headers["x-inferq-cache"] == "hit-exact"
    bad = await client.post("/v1/chat/completions", json={**body, "cache": {"mode": "sometimes"}})
    assert bad.status_code == 400
    huge = await client.post("/v1/completions", json={"model": "echo", "prompt": "x",
                                                      "max_tokens": 10**6})  # fmt: skip
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "max_tokens"


async def test_stream_options_without_stream_is_400(client: httpx.AsyncClient) -> None:
    body = {"model": "echo", "prompt": "x", "max_tokens": 1,
            "stream_options": {"include_usage": True}}  # fmt: skip
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream_options"
