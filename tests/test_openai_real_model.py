"""The OpenAI surface on the real bundled model (Gemma 3 270M, a base model): chat template,
seeded determinism, JSON mode and JSON Schema output parsed into a pydantic model."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import asyncpg
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import API_KEY

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"


@pytest.fixture
def oai(stack: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int


async def test_json_schema_output_parses_into_model(oai: openai.OpenAI) -> None:
    completion = await asyncio.to_thread(
        oai.chat.completions.parse,
        model=MODEL,
        messages=[{"role": "user", "content": "Give the largest city of France as JSON."}],
        response_format=City,
        max_tokens=80,
        temperature=0.0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    city = choice.message.parsed
    assert isinstance(city, City)
    assert City.model_validate_json(choice.message.content or "") == city


async def test_json_schema_too_short_is_reported_as_length(oai: openai.OpenAI) -> None:
    # A grammar cannot close the JSON before max_tokens runs out; the client is told so.
    with pytest.raises(openai.LengthFinishReasonError):
        await asyncio.to_thread(
            oai.chat.completions.parse,
            model=MODEL,
            messages=[{"role": "user", "content": "A city as JSON."}],
            response_format=City,
            max_tokens=4,
            temperature=0.0,
        )


async def test_json_object_mode(oai: openai.OpenAI) -> None:
    completion = await asyncio.to_thread(
        oai.chat.completions.create,
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a dog as a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=120,
        seed=3,
    )
    choice = completion.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # length: the object may be cut, but it is a prefix of JSON, never prose
        assert (choice.message.content or "").lstrip().startswith("{")


async def test_seed_gives_same_text(oai: openai.OpenAI) -> None:
    def run(seed: int) -> str:
        out = oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write one sentence about the sea."}],
            max_tokens=16,
            temperature=0.9,
            seed=seed,
        )
        return out.choices[0].message.content or ""

    first = await asyncio.to_thread(run, 11)
    second = await asyncio.to_thread(run, 11)
    assert first == second and first


async def test_prompt_is_built_with_the_chat_template(
    oai: openai.OpenAI, db: asyncpg.Connection
) -> None:
    raw = await asyncio.to_thread(
        oai.chat.completions.with_raw_response.create,
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello"},
        ],
        max_tokens=4,
        stream=False,
    )
    prompt = await db.fetchval(
        "SELECT prompt FROM jobs WHERE id = $1", uuid.UUID(raw.headers["x-inferq-job-id"])
    )
    assert prompt == (
        "<bos><start_of_turn>user\nYou are terse.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    )
    assert raw.parse().usage.prompt_tokens > 5


async def test_streaming_on_the_real_model(stack: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None
    assert 1 <= chunks[-1].usage.completion_tokens <= 12
    await client.close()


class Address(BaseModel):
    zip: str = Field(pattern=r"^\d{5}$")
    email: str = Field(pattern=r"^[\w.-]+@[\w-]+\.[a-z]{2,3}$")


async def test_json_schema_patterns_with_regex_classes(oai: openai.OpenAI) -> None:
    """`\\d`, `\\w` and `\\.` in a pattern used to fail in the worker as 500 engine_error."""
    completion = await asyncio.to_thread(
        oai.chat.completions.parse,
        model=MODEL,
        messages=[{"role": "user", "content": "An address as JSON."}],
        response_format=Address,
        max_tokens=60,
        temperature=0.0,
    )
    address = completion.choices[0].message.parsed
    assert isinstance(address, Address)  # the patterns held: pydantic checked them


@pytest.mark.parametrize("schema", [{"enum": []}, {"anyOf": []}])
async def test_a_schema_llama_cpp_cannot_compile_is_400_before_any_job(
    oai: openai.OpenAI, db: asyncpg.Connection, schema: dict[str, object]
) -> None:
    jobs = await db.fetchval("SELECT count(*) FROM jobs")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as refused:
        await asyncio.to_thread(
            oai.chat.completions.create,
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            response_format=fmt,  # type: ignore[arg-type]
            max_tokens=4,
        )
    assert refused.value.code == "unsupported_json_schema"
    assert await db.fetchval("SELECT count(*) FROM jobs") == jobs


async def test_messages_of_one_role_in_a_row_are_taken(
    oai: openai.OpenAI, db: asyncpg.Connection
) -> None:
    """Two system messages, or context then question as two user messages: OpenAI and Ollama
    take them; Gemma's template raised, so they were 400 "roles must alternate"."""
    raw = await asyncio.to_thread(
        oai.chat.completions.with_raw_response.create,
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "Paris is in France."},
            {"role": "user", "content": "Where is Paris?"},
        ],
        max_tokens=2,
    )
    job_id = uuid.UUID(raw.headers["x-inferq-job-id"])
    prompt = await db.fetchval("SELECT prompt FROM jobs WHERE id = $1", job_id)
    assert "Be brief.\n\nAnswer in English.\n\nParis is in France.\n\nWhere is Paris?" in prompt
    assert prompt.count("<start_of_turn>user") == 1
