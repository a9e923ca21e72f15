"""The MLX engine on the real bundled weights, converted by `inferq models convert` (slow).

mlx[cpu] decodes about 7 tokens/s in float32 here, so generations stay a few tokens long.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("mlx_lm", reason="the `mlx` extra is not installed")

from inferq.catalog import BUNDLED_GGUF, MLX_MODEL
from inferq.settings import get_settings
from inferq.workers.engine import GenerationRequest, SamplingParams
from inferq.workers.mlx import MlxEngine
from inferq.workers.mlx_convert import hf_name, is_converted
from tests.conftest import submit, wait_final
from tests.stack import Proc, inferq_argv, wait_workers

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def converted() -> Path:
    """`inferq models convert`, as a user runs it; reused when already converted."""
    result = subprocess.run(
        inferq_argv("models", "convert"), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder == get_settings().model_dir / MLX_MODEL
    # Progress is visible: either the steps of a conversion or the notice that it is done.
    assert "dequantizing: 236/236" in result.stderr or "already converted" in result.stderr
    return folder


@pytest.fixture(scope="module")
def engine(converted: Path) -> Iterator[MlxEngine]:
    mlx_engine = MlxEngine(MLX_MODEL, converted, n_ctx=2048, slots=4)
    mlx_engine.load()
    yield mlx_engine
    mlx_engine.unload()


def _gguf() -> Path:
    return get_settings().model_dir / BUNDLED_GGUF


def _greedy(max_tokens: int) -> GenerationRequest:
    return GenerationRequest(PROMPT, SamplingParams(max_tokens=max_tokens, temperature=0.0))


def _llama_greedy(prompt: str, max_tokens: int) -> str:
    from llama_cpp import Llama

    llm = Llama(model_path=str(_gguf()), n_ctx=256, verbose=False)
    try:
        out = []
        for index, token in enumerate(llm.generate(llm.tokenize(prompt.encode()), temp=0.0)):
            if index >= max_tokens:
                break
            out.append(token)
        return str(llm.detokenize(out).decode())
    finally:
        llm.close()


def test_converted_folder_is_complete(converted: Path) -> None:
    names = {p.name for p in converted.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert is_converted(converted, _gguf())
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["num_hidden_layers"] == 18


def test_norm_weights_are_shifted_back_and_matrices_dequantized(converted: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    reader = GGUFReader(str(_gguf()))
    by_name = {t.name: t for t in reader.tensors}
    with safe_open(str(converted / "model.safetensors"), framework="numpy") as weights:
        norm = by_name["blk.0.attn_norm.weight"]
        assert hf_name(norm.name) == "model.layers.0.input_layernorm.weight"
        shifted = weights.get_tensor(hf_name(norm.name))
        np.testing.assert_array_equal(shifted, np.asarray(norm.data) - 1.0)
        down = by_name["blk.3.ffn_down.weight"]  # K-quant; [in=2048, out=640] in GGUF order
        converted_down = weights.get_tensor("model.layers.3.mlp.down_proj.weight")
    assert converted_down.shape == (640, 2048)
    np.testing.assert_array_equal(converted_down, dequantize(down.data, down.tensor_type))


def test_tokenizer_from_the_gguf_matches_llama_cpp(engine: MlxEngine) -> None:
    from inferq.tokenizers import LlamaTokenizer

    reference = LlamaTokenizer(_gguf())
    for text in (
        PROMPT,
        "<bos><start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n",
        "naïve café — 東京 🚀  two  spaces\tand\nlines",
    ):
        assert engine.encode(text) == reference.encode(text), text


def test_greedy_text_matches_llama_cpp(engine: MlxEngine) -> None:
    tokens = list(engine.generate(_greedy(8)))
    text = "".join(t.text for t in tokens)
    # Same dequantized weights; llama.cpp quantizes activations in its dot products, so over
    # long runs a near-tie can flip. On this prompt the first 17 tokens agree; 8 are checked.
    assert text == _llama_greedy(PROMPT, 8)
    assert len(tokens) == 8


def test_concurrent_jobs_share_the_batch_and_keep_their_text(engine: MlxEngine) -> None:
    prompts = [PROMPT, "Once upon a time"]
    alone = {p: _text(engine, p, 5) for p in prompts}
    together: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda p=p: together.__setitem__(p, _text(engine, p, 5)))
        for p in prompts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == alone


def _text(engine: MlxEngine, prompt: str, max_tokens: int, **params: object) -> str:
    request = GenerationRequest(
        prompt, SamplingParams(max_tokens=max_tokens, **{"temperature": 0.0, **params})
    )
    return "".join(t.text for t in engine.generate(request))


def test_seeded_sampling_is_reproducible(engine: MlxEngine) -> None:
    first = _text(engine, "Hello", 4, temperature=0.9, seed=7)
    assert first == _text(engine, "Hello", 4, temperature=0.9, seed=7)


def test_frequency_penalty_changes_a_repetitive_greedy_text(engine: MlxEngine) -> None:
    prompt = "one two one two one two one two"
    plain = _text(engine, prompt, 4)
    assert _text(engine, prompt, 4, frequency_penalty=2.0) != plain


def test_closing_the_generator_leaves_the_batch(engine: MlxEngine) -> None:
    tokens = engine.generate(_greedy(100))
    next(tokens)
    assert engine.capacity()["busy"] == 1
    tokens.close()
    deadline = time.monotonic() + 10
    while engine.capacity()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.capacity()["busy"] == 0


@pytest.fixture(scope="module")
def mlx_worker(stack: str, converted: Path) -> Iterator[None]:
    proc = Proc("worker-mlx", inferq_argv("worker", "--engine", "mlx", "--model", MLX_MODEL), {})
    try:
        wait_workers(get_settings().redis_url, {MLX_MODEL}, timeout=180)
        yield
    finally:
        proc.stop()


async def test_job_through_mlx_worker(client: httpx.AsyncClient, mlx_worker: None) -> None:
    accepted = await submit(client, model=MLX_MODEL, prompt=PROMPT, max_tokens=4, temperature=0.0)
    job = await wait_final(client, accepted["id"], timeout=180)
    assert job["status"] == "completed", job
    assert job["engine"] == "mlx"
    assert job["output"] == _llama_greedy(PROMPT, 4)
    assert job["finish_reason"] == "length"
