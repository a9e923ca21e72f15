"""The spine on the real bundled model: submit, poll, stream, seed, usage."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from inferq.catalog import resolve_model
from inferq.settings import get_settings
from inferq.tokenizers import LlamaTokenizer
from tests.conftest import read_sse, submit, wait_final

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"


@pytest.fixture(scope="module")
def tokenizer() -> LlamaTokenizer:
    path = resolve_model(get_settings(), MODEL).path
    assert isinstance(path, Path)
    return LlamaTokenizer(path)


async def test_submit_poll_completes_with_text_and_usage(
    client: httpx.AsyncClient, tokenizer: LlamaTokenizer
) -> None:
    prompt = "The capital of France is"
    accepted = await submit(client, model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    assert accepted["status"] == "queued" and accepted["model"] == MODEL
    assert set(accepted["links"]) == {"self", "events", "cancel"}
    job = await wait_final(client, accepted["id"])
    assert job["status"] == "completed"
    assert job["output"].strip()
    assert job["finish_reason"] in ("stop", "length")
    usage = job["usage"]
    assert usage["prompt_tokens"] == len(tokenizer.encode(prompt))
    if job["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12
    else:
        assert 1 <= usage["completion_tokens"] < 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    timings = job["timings"]
    assert 0 <= timings["queue_ms"] <= timings["ttft_ms"] <= timings["total_ms"]
    assert timings["tpot_ms"] > 0
    assert job["worker"]["engine"] == "llamacpp" and job["worker"]["model"] == MODEL


async def test_sse_stream_equals_final_output(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model=MODEL, prompt="Once upon a time", max_tokens=24)
    events = await read_sse(client, accepted["id"])
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "end"
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    job = await wait_final(client, accepted["id"])
    assert streamed == job["output"] and streamed
    assert events[-1]["usage"] == job["usage"]
    assert events[-1]["finish_reason"] == job["finish_reason"]


async def test_chat_messages_use_the_model_template(
    client: httpx.AsyncClient, tokenizer: LlamaTokenizer
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    accepted = await submit(client, model=MODEL, messages=messages, max_tokens=8)
    job = await wait_final(client, accepted["id"])
    assert job["status"] == "completed"
    rendered = tokenizer.render_chat(messages)
    assert rendered.startswith("<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>")
    assert job["usage"]["prompt_tokens"] == len(tokenizer.encode(rendered))


async def test_same_seed_gives_same_text(client: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL,
        "prompt": "My favourite food is",
        "max_tokens": 16,
        "temperature": 1.0,
        "seed": 1234,
    }
    first = await wait_final(client, (await submit(client, **body))["id"])
    second = await wait_final(client, (await submit(client, **body))["id"])
    assert first["output"] == second["output"] and first["output"]


async def test_stop_sequence_ends_the_text(client: httpx.AsyncClient) -> None:
    free = await wait_final(
        client,
        (await submit(client, model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=16, temperature=0))[
            "id"
        ],
    )
    assert free["output"], "the model must say something for the stop test to mean anything"
    stop = free["output"].strip()[:2]
    stopped = await wait_final(
        client,
        (
            await submit(
                client,
                model=MODEL,
                prompt="Count: 1, 2, 3,",
                max_tokens=16,
                temperature=0,
                stop=[stop],
            )
        )["id"],
    )
    assert stopped["finish_reason"] == "stop"
    assert stop not in stopped["output"]
    assert free["output"].startswith(stopped["output"])


async def test_cancel_running_job_within_one_second(client: httpx.AsyncClient) -> None:
    import time

    accepted = await submit(
        client, model=MODEL, prompt="Tell me a long story.", max_tokens=1500, temperature=0.8
    )
    first = await read_sse(client, accepted["id"], stop_after=1)
    assert first[0]["type"] == "token"
    asked = time.monotonic()
    cancelled = (await client.post(f"/v1/jobs/{accepted['id']}/cancel")).json()
    events = await read_sse(client, accepted["id"])
    elapsed = time.monotonic() - asked
    assert cancelled["status"] == "cancelled"
    assert elapsed < 1.0, f"cancel took {elapsed:.3f} s"
    assert events[-1]["type"] == "end" and events[-1]["finish_reason"] == "cancelled"
    job = await wait_final(client, accepted["id"])
    assert job["status"] == "cancelled" and job["finish_reason"] == "cancelled"
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert job["output"] == streamed and job["output"]
    assert job["usage"]["completion_tokens"] < 1500
