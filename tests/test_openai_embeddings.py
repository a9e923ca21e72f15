"""/v1/embeddings with the bundled all-MiniLM-L6-v2, through the official `openai` package."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import API_KEY


@pytest.fixture
def oai(stack: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack}/v1", api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_float_and_base64_agree(oai: openai.OpenAI, client: httpx.AsyncClient) -> None:
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Quarterly tax filing rules."]
    floats = await asyncio.to_thread(
        oai.embeddings.create, model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    # the client asks for base64 by default and decodes it itself
    decoded = await asyncio.to_thread(oai.embeddings.create, model="all-MiniLM-L6-v2", input=texts)
    assert [d.index for d in floats.data] == [0, 1, 2]
    vectors = [d.embedding for d in floats.data]
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4) for v in vectors)
    for a, b in zip(vectors, (d.embedding for d in decoded.data), strict=True):
        assert np.allclose(a, b, atol=1e-6)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 10
    raw = await client.post(
        "/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": "hi", "encoding_format": "base64"},
    )
    blob = raw.json()["data"][0]["embedding"]
    assert isinstance(blob, str)
    assert np.frombuffer(base64.b64decode(blob), dtype="<f4").shape == (384,)


async def test_concurrent_requests_are_batched_and_correct(oai: openai.OpenAI) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(12)]

    def one(text: str) -> list[float]:
        out = oai.embeddings.create(model="all-MiniLM-L6-v2", input=text, encoding_format="float")
        return out.data[0].embedding

    singles = await asyncio.gather(*(asyncio.to_thread(one, t) for t in texts))
    together = await asyncio.to_thread(
        oai.embeddings.create, model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    for single, batched in zip(singles, together.data, strict=True):
        assert np.allclose(single, batched.embedding, atol=1e-5)


async def test_embedding_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(oai.embeddings.create, model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError) as chat_model:
        await asyncio.to_thread(oai.embeddings.create, model="echo", input="x")
    assert chat_model.value.code == "model_not_embedding"
    with pytest.raises(openai.BadRequestError) as long:
        await asyncio.to_thread(
            oai.embeddings.create, model="all-MiniLM-L6-v2", input="word " * 400
        )
    assert long.value.param == "input" and long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as dims:
        await asyncio.to_thread(
            oai.embeddings.create, model="all-MiniLM-L6-v2", input="x", dimensions=128
        )
    assert dims.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as many:
        await asyncio.to_thread(oai.embeddings.create, model="all-MiniLM-L6-v2", input=["x"] * 2049)
    assert many.value.param == "input" and many.value.code == "array_too_long"


async def test_ollama_embed_refuses_more_inputs_than_openai_allows(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": ["x"] * 2049}
    response = await client.post("/api/embed", json=body)
    assert response.status_code == 400 and "at most 2048" in response.json()["error"]
    body["input"] = ["x"] * 2048
    response = await client.post("/api/embed", json=body)
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 2048
