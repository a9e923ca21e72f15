"""Head/tail compaction: unit checks, the real model's tokenizer, plain jobs, a real chat turn."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from inferq.catalog import resolve_model
from inferq.context import TEXT_CUT_MARK, cut_mark, fit_messages, fit_text
from inferq.errors import ContextLengthExceeded
from inferq.settings import get_settings
from inferq.tokenizers import LlamaTokenizer, WordTokenizer
from tests.conftest import submit, wait_final
from tests.wschat import chat, connect, ws_url


def history(turns: int, words: int = 30) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "SYSTEM rules here"}]
    for i in range(turns):
        filler = " ".join(f"u{i}x{j}" for j in range(words))
        messages.append({"role": "user", "content": f"QUESTION{i} {filler}"})
        messages.append({"role": "assistant", "content": f"ANSWER{i} {filler}"})
    messages.append({"role": "user", "content": "LATEST question"})
    return messages


def test_short_chat_is_untouched() -> None:
    fitted = fit_messages(WordTokenizer(), history(2, words=3), budget=1000)
    assert not fitted.truncated and fitted.original_tokens == fitted.effective_tokens
    assert fitted.dropped_messages == 0 and "ANSWER1" in fitted.prompt


def test_long_chat_keeps_head_and_tail_and_marks_the_cut() -> None:
    tokenizer = WordTokenizer()
    fitted = fit_messages(tokenizer, history(40), budget=500)
    assert fitted.truncated and fitted.original_tokens > 500 >= fitted.effective_tokens
    assert fitted.effective_tokens == len(tokenizer.encode(fitted.prompt))
    assert fitted.messages is not None
    roles = [m["role"] for m in fitted.messages]
    assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * (len(roles) // 2 - 1) + [
        "user"
    ]
    prompt = fitted.prompt
    assert "SYSTEM rules" in prompt and "QUESTION0" in prompt and "ANSWER0" in prompt
    assert "QUESTION39" in prompt and "LATEST question" in prompt
    assert "QUESTION1 " not in prompt and "QUESTION20 " not in prompt
    assert cut_mark(fitted.dropped_messages).strip() in prompt
    assert fitted.dropped_messages % 2 == 0
    # As few turns as possible were dropped: one pair more would have fitted too, one fewer not.
    assert 500 - fitted.effective_tokens < 2 * 32 + 10


def test_huge_last_message_is_compacted_by_head_and_tail() -> None:
    tokenizer = WordTokenizer()
    big = " ".join(f"b{i}" for i in range(3000))
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": big}]
    fitted = fit_messages(tokenizer, messages, budget=400)
    assert fitted.truncated and fitted.effective_tokens <= 400
    assert "b0 b1" in fitted.prompt and "b2999" in fitted.prompt and "[…]" in fitted.prompt


def test_plain_text_fit_and_refusal() -> None:
    tokenizer = WordTokenizer()
    text = " ".join(f"w{i}" for i in range(1000))
    fitted = fit_text(tokenizer, text, 200)
    assert fitted.truncated and fitted.original_tokens == 1000 and fitted.effective_tokens <= 200
    head, tail = fitted.prompt.split(TEXT_CUT_MARK)
    assert text.startswith(head) and text.endswith(tail) and len(tail) > len(head)
    with pytest.raises(ContextLengthExceeded):
        fit_messages(
            tokenizer,
            [{"role": "system", "content": "s " * 500}, {"role": "user", "content": "hi"}],
            100,
        )


@pytest.mark.slow
def test_compaction_with_the_real_tokenizer() -> None:
    spec = resolve_model(get_settings(), "gemma-3-270m")
    assert spec.path is not None
    tokenizer = LlamaTokenizer(spec.path)
    messages = history(120)
    budget = spec.context_length - 256
    fitted = fit_messages(tokenizer, messages, budget)
    assert fitted.original_tokens > 3 * budget
    assert fitted.effective_tokens <= budget
    assert fitted.effective_tokens == len(tokenizer.encode(fitted.prompt))
    pair = fitted.original_tokens // 120
    assert fitted.effective_tokens > budget - pair, "drops only the turns it must"
    assert fitted.prompt.startswith("<bos><start_of_turn>user\nSYSTEM rules here")
    assert "QUESTION0 " in fitted.prompt and "ANSWER0 " in fitted.prompt
    assert "QUESTION119 " in fitted.prompt and fitted.prompt.endswith(
        "LATEST question<end_of_turn>\n<start_of_turn>model\n"
    )
    assert "earlier messages omitted" in fitted.prompt


async def test_plain_job_truncate_auto(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    prompt = " ".join(f"p{i}" for i in range(3000))  # the test context is 2048 echo tokens
    refused = await client.post(
        "/v1/jobs", json={"model": "echo", "prompt": prompt, "max_tokens": 8}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    bad = await client.post(
        "/v1/jobs", json={"model": "echo", "prompt": "x", "truncate": "sometimes"}
    )
    assert bad.status_code == 422
    accepted = await submit(client, model="echo", prompt=prompt, max_tokens=8, truncate="auto")
    job = await wait_final(client, accepted["id"])
    assert job["status"] == "completed" and job["output"].startswith("p0 p1")
    row = await db.fetchrow(
        "SELECT prompt, prompt_tokens, prompt_truncated, original_prompt_tokens, "
        "effective_prompt_tokens FROM jobs WHERE id = $1::uuid",
        accepted["id"],
    )
    assert row["prompt_truncated"] and row["original_prompt_tokens"] == 3000
    assert row["effective_prompt_tokens"] == row["prompt_tokens"] <= 2048 - 8
    assert row["prompt"].endswith("p2999") and "[…]" in row["prompt"]
    short = await submit(client, model="echo", prompt="a b", max_tokens=2, truncate="auto")
    plain = await db.fetchrow(
        "SELECT prompt_truncated, original_prompt_tokens, effective_prompt_tokens "
        "FROM jobs WHERE id = $1::uuid",
        short["id"],
    )
    assert tuple(plain) == (False, 2, 2)


async def _session_with_history(db: asyncpg.Connection, model: str, turns: int) -> str:
    session_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO chat_sessions (id, model, system_prompt, message_count, tenant_id) "
        "VALUES ($1, $2, 'You answer in English.', $3, "
        "(SELECT id FROM tenants WHERE name = 'tests'))",  # the tests' tenant (conftest)
        session_id,
        model,
        2 * turns,
    )
    rows = []
    for i in range(turns):
        text = f"Fact number {i}: " + " ".join(["the river flows to the sea"] * 8)
        rows.append((uuid.uuid4(), session_id, 2 * i, "user", text, "complete"))
        rows.append(
            (uuid.uuid4(), session_id, 2 * i + 1, "assistant", f"Noted {i}. " + text, "complete")
        )
    await db.executemany(
        "INSERT INTO chat_messages (id, session_id, position, role, content, status) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        rows,
    )
    return str(session_id)


@pytest.mark.slow
async def test_real_model_turn_in_a_long_session_is_compacted(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    session_id = await _session_with_history(db, "gemma-3-270m", turns=60)
    async with connect(ws_url(stack)) as ws:
        start, frames = await chat(
            ws,
            "What was fact number 0 about?",
            session_id=session_id,
            params={"max_tokens": 12, "temperature": 0.0},
            timeout=300,
        )
    end = frames[-1]
    assert end["event"] == "stream_end", end
    job = await wait_final(client, start["job_id"])
    row = await db.fetchrow(
        "SELECT prompt, prompt_truncated, original_prompt_tokens, effective_prompt_tokens "
        "FROM jobs WHERE id = $1::uuid",
        start["job_id"],
    )
    assert row["prompt_truncated"] and row["original_prompt_tokens"] > 2048
    assert row["effective_prompt_tokens"] <= 2048 - 12
    assert end["data"]["usage"]["prompt_tokens"] == row["effective_prompt_tokens"]
    assert "Fact number 0:" in row["prompt"] and "Fact number 59:" in row["prompt"]
    assert "Fact number 30:" not in row["prompt"] and "earlier messages omitted" in row["prompt"]
    stored = await db.fetchrow(
        "SELECT content, status FROM chat_messages WHERE job_id = $1::uuid", start["job_id"]
    )
    assert stored["status"] == "complete" and stored["content"] == job["output"]


@pytest.mark.slow
async def test_real_model_chat_turns_remember_the_session(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    params = {"max_tokens": 12, "temperature": 0.0}
    async with connect(ws_url(stack)) as ws:
        first, frames = await chat(
            ws, "My name is Ada. Say hello.", model="gemma-3-270m", params=params, timeout=300
        )
        tokens = [f["data"]["token"] for f in frames if f["event"] == "stream_token"]
        assert tokens, "the real model streamed tokens"
        second, _ = await chat(
            ws, "What is my name?", session_id=first["session_id"], params=params, timeout=300
        )
    assert second["session_id"] == first["session_id"]
    reply = (await wait_final(client, first["job_id"]))["output"]
    assert reply == "".join(tokens)
    prompt = await db.fetchval("SELECT prompt FROM jobs WHERE id = $1::uuid", second["job_id"])
    expected = (
        f"<start_of_turn>user\nMy name is Ada. Say hello.<end_of_turn>\n"
        f"<start_of_turn>model\n{reply.strip()}<end_of_turn>\n"
        "<start_of_turn>user\nWhat is my name?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert prompt.endswith(expected), prompt
