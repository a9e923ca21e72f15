"""Continuous batching on the real model: batched sequences equal solo ones, bit for bit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import llama_cpp
import pytest

from inferq.catalog import BUNDLED_MODEL, resolve_model
from inferq.settings import get_settings
from inferq.workers.engine import GenerationRequest, SamplingParams
from inferq.workers.llamacpp import LlamaCppEngine
from tests.conftest import submit, wait_final

pytestmark = pytest.mark.slow
T = TypeVar("T")

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "My favourite food is",
    "The quick brown fox",
    "In 1492, Columbus",
    "Water boils at",
    "The three laws of robotics are",
]
N_TOKENS = 48
# Prompts of more than 256 tokens: their KV views reach 512 cells, where flash attention over an
# f16 cache splits one sequence across threads but not a batch (3 of these 8 diverged so).
TOPICS = ["the Roman empire", "volcanoes", "the printing press", "honey bees",
          "jazz music", "the moon landing", "glaciers", "chess openings"]  # fmt: skip
LONG_PROMPTS = [
    " ".join(
        f"Paragraph {j}: a short note on {topic}, its causes, its history and what people said."
        for j in range(14)
    )
    + f" Now summarise everything about {topic}:"
    for topic in TOPICS
]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    path = resolve_model(get_settings(), BUNDLED_MODEL).path
    assert isinstance(path, Path)
    engine = LlamaCppEngine(BUNDLED_MODEL, path, 1024, None, slots=8)
    engine.load()
    yield engine
    engine.unload()


def _run(
    engine: LlamaCppEngine, prompt: str, max_tokens: int = N_TOKENS, **params: object
) -> list[int]:
    sampling = SamplingParams(max_tokens=max_tokens, **params)  # type: ignore[arg-type]
    return [t.id for t in engine.generate(GenerationRequest(prompt, sampling))]


def _together(works: list[Callable[[], T]]) -> list[T]:
    """Run each function in a thread of its own, all released at once; their results."""
    results: list[T | None] = [None] * len(works)
    start = threading.Barrier(len(works))

    def run(i: int) -> None:
        start.wait()
        results[i] = works[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(result is not None for result in results), "a thread failed or hung"
    return [result for result in results if result is not None]


def _concurrently(engine: LlamaCppEngine, jobs: list[dict[str, object]]) -> list[list[int]]:
    return _together([functools.partial(_run, engine, **job) for job in jobs])  # type: ignore[arg-type]


def test_eight_concurrent_greedy_jobs_equal_their_solo_runs(engine: LlamaCppEngine) -> None:
    solo = [_run(engine, p, temperature=0) for p in PROMPTS]
    assert all(len(tokens) > 0 for tokens in solo)
    batched = _concurrently(engine, [{"prompt": p, "temperature": 0} for p in PROMPTS])
    assert batched == solo
    assert engine.kv_usage()["kv_used"] == 0
    assert engine.kv_cells_in_llama() == 0


def test_long_sequences_batched_equal_their_solo_runs(engine: LlamaCppEngine) -> None:
    assert min(engine.count_tokens(p) for p in LONG_PROMPTS) > 256
    jobs = [{"prompt": p, "temperature": 0, "max_tokens": 32} for p in LONG_PROMPTS]
    solo = [_run(engine, **job) for job in jobs]  # type: ignore[arg-type]
    assert all(len(tokens) == 32 for tokens in solo)
    assert _concurrently(engine, jobs) == solo


def _run_each(engine: LlamaCppEngine, prompt: str, lengths: list[int]) -> list[list[int]]:
    """One client: a greedy job of each length, one after the other."""
    return [_run(engine, prompt, n, temperature=0) for n in lengths]


def test_churning_slots_decode_in_slot_order_and_equal_solo(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of unequal lengths, two after each other per client: slots free and refill out of
    order. Each decode batch must list its sequences by slot (llama.cpp splits a batch at every
    break in the seq ids, one more pass over the weights each), and each job equal its solo run.
    """
    lengths = [[6, 30], [24, 8], [12, 20], [30, 4], [4, 24], [18, 12], [8, 16], [26, 6]]
    solo = [_run_each(engine, PROMPTS[i], pair) for i, pair in enumerate(lengths)]
    batches: list[list[int]] = []
    decode = llama_cpp.llama_decode

    def recording_decode(ctx: object, batch: llama_cpp.llama_batch) -> int:
        batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return int(decode(ctx, batch))

    monkeypatch.setattr(llama_cpp, "llama_decode", recording_decode)
    results = _together(
        [functools.partial(_run_each, engine, PROMPTS[i], pair) for i, pair in enumerate(lengths)]
    )
    assert results == solo
    decodes = [ids for ids in batches if len(set(ids)) > 1]
    assert decodes, "no step decoded several sequences"
    assert all(ids == sorted(ids) for ids in decodes)
    # The load did churn: some step ran a set of slots other than the first k.
    assert any(ids != list(range(len(ids))) for ids in decodes)


def test_cancelling_one_sequence_leaves_the_others_equal_to_solo(
    engine: LlamaCppEngine,
) -> None:
    prompts = PROMPTS[:4]
    solo = [_run(engine, p, temperature=0) for p in prompts]

    def victim() -> list[int]:
        sampling = SamplingParams(max_tokens=N_TOKENS, temperature=0)
        with contextlib.closing(engine.generate(GenerationRequest(prompts[0], sampling))) as gen:
            return [next(gen).id, next(gen).id]  # then closed mid-generation

    others = [functools.partial(_run, engine, p, temperature=0) for p in prompts[1:]]
    results = _together([victim, *others])
    assert results[0] == solo[0][:2]
    assert results[1:] == solo[1:]
    assert engine.kv_usage()["kv_used"] == 0 and engine.kv_cells_in_llama() == 0


def test_kv_accounting_counts_live_cells_and_returns_to_zero(engine: LlamaCppEngine) -> None:
    sampling = SamplingParams(max_tokens=N_TOKENS, temperature=0)
    prompt_tokens = engine.count_tokens(PROMPTS[0])
    gen = engine.generate(GenerationRequest(PROMPTS[0], sampling))
    next(gen)
    next(gen)
    # The prompt and the first sampled token are in the cache (the latest one is not yet).
    used = engine.kv_usage()["kv_used"]
    assert used >= prompt_tokens + 1
    assert engine.kv_cells_in_llama() == engine.kv_usage()["kv_used"]
    assert engine.capacity()["kv_total"] == 8 * 1024
    gen.close()
    assert engine.kv_cells_in_llama() == 0  # runs after the scheduler dropped the sequence
    assert engine.kv_usage()["kv_used"] == 0


def test_seeded_sampling_is_reproducible_under_batching(engine: LlamaCppEngine) -> None:
    jobs: list[dict[str, object]] = [
        {"prompt": p, "temperature": 1.0, "seed": 1000 + i} for i, p in enumerate(PROMPTS)
    ]
    solo = [_run(engine, **job) for job in jobs]  # type: ignore[arg-type]
    batched = _concurrently(engine, jobs)
    assert batched == solo
    assert _run(engine, PROMPTS[0], temperature=1.0, seed=7) != solo[0]


def test_penalties_change_a_repetitive_greedy_text(engine: LlamaCppEngine) -> None:
    prompt = "one two one two one two one two one two"
    plain = _run(engine, prompt, 8, temperature=0.0)
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        penalised = _run(engine, prompt, 8, temperature=0.0, **penalty)
        assert len(penalised) == 8
        assert penalised != plain, penalty
    assert engine.kv_usage()["kv_used"] == 0


def test_a_bad_grammar_is_refused_before_it_reaches_the_batch(engine: LlamaCppEngine) -> None:
    with pytest.raises(Exception, match="grammar"):
        engine.generate(GenerationRequest("x", SamplingParams(max_tokens=2, grammar="root ::= (")))
    assert engine.kv_usage()["kv_used"] == 0


async def test_eight_concurrent_jobs_through_the_stack_equal_solo(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": BUNDLED_MODEL, "max_tokens": N_TOKENS, "temperature": 0}
    solo = []
    for prompt in PROMPTS:
        job = await wait_final(client, (await submit(client, prompt=prompt, **body))["id"])
        solo.append(job["output"])
    accepted = await asyncio.gather(*(submit(client, prompt=p, **body) for p in PROMPTS))
    finals = await asyncio.gather(*(wait_final(client, a["id"]) for a in accepted))
    assert [f["status"] for f in finals] == ["completed"] * len(PROMPTS)
    assert [f["output"] for f in finals] == solo
    workers = (await client.get("/v1/workers")).json()["data"]
    llama = [w for w in workers if w["model"] == BUNDLED_MODEL]
    assert llama and llama[0]["slots"] == 8
