"""Continuous batching benchmark: aggregate tokens/s of 1, 2, 4, 8 concurrent jobs.

    python bench/batching.py engine            # the engine in-process, plus a plain Llama loop
    python bench/batching.py single            # one sequence: engine against plain loop
    python bench/batching.py churn             # closed loop: 1 then 8 clients, jobs back to back
    python bench/batching.py stack --url URL   # through a running API + llama.cpp worker

`single` alternates a plain single-sequence `Llama.generate` loop and the batching engine (8
slots, as a worker runs it) on the same model, threads and prompt, several rounds, and prints
each round and the medians: the "at most 5 % slower than a plain loop" target. Each run is a
fresh process: a context created after a `Llama` has run in the same process decodes 20 %
slower (12.5 against 10.0 ms per token here), which would be charged to whichever runs second,
and ggml reads `GGML_CPU_TILED_MM` (which exact mode sets) once per process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inferq.catalog import BUNDLED_MODEL, resolve_model
from inferq.settings import get_settings

PROMPTS = [
    "Once upon a time",
    "The history of the Roman empire",
    "def fibonacci(n):",
    "My favourite food is",
    "The quick brown fox",
    "In 1492, Columbus",
    "Water boils at",
    "The three laws of robotics are",
]
# The bundled model where `inferq models assemble` put it (INFERQ_MODEL_DIR).
MODEL = Path(str(resolve_model(get_settings(), BUNDLED_MODEL).path))


def _engine_rounds(tokens: int, exact: bool) -> None:
    from inferq.workers.engine import GenerationRequest, SamplingParams
    from inferq.workers.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine("gemma-3-270m", MODEL, 2048, None, slots=8, exact=exact)
    engine.load()
    params = SamplingParams(max_tokens=tokens, temperature=0)
    try:
        for n in (1, 2, 4, 8):
            counts = [0] * n

            def work(i: int, counts: list[int] = counts) -> None:
                for _ in engine.generate(GenerationRequest(PROMPTS[i], params)):
                    counts[i] += 1

            wall = _in_threads(n, work)
            print(f"engine exact={exact} n={n}: {sum(counts) / wall:7.1f} tok/s aggregate")
    finally:
        engine.unload()


def _in_threads(n: int, work: Callable[[int], None]) -> float:
    """Run `work(0)` ... `work(n - 1)` in threads at once; the seconds until all are done."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _churn(tokens: int, seconds: float) -> None:
    """1, then 8 clients, each submitting its next job as soon as its last ends, for `seconds`.

    Jobs of unequal lengths end at different steps, so slots free up and fill in any order, as
    they do behind a worker (the `engine` mode starts all jobs at once, in slot order).
    """
    from inferq.workers.engine import GenerationRequest, SamplingParams
    from inferq.workers.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine("gemma-3-270m", MODEL, 2048, None, slots=8)
    engine.load()
    rates = {}
    try:
        for n in (1, 8):
            counts = [0] * n
            deadline = time.perf_counter() + seconds

            def client(i: int, counts: list[int] = counts, deadline: float = deadline) -> None:
                j = 0
                while time.perf_counter() < deadline:
                    length = tokens // 2 + (7 * (i + j)) % (tokens // 2)
                    params = SamplingParams(max_tokens=length, temperature=0)
                    prompt = PROMPTS[(i + j) % len(PROMPTS)]
                    for _ in engine.generate(GenerationRequest(prompt, params)):
                        counts[i] += 1
                    j += 1

            wall = _in_threads(n, client)
            rates[n] = sum(counts) / wall
            print(f"churn n={n}: {rates[n]:7.1f} tok/s aggregate")
    finally:
        engine.unload()
    print(f"8 clients / 1 client: {rates[8] / rates[1]:.2f}x")


# Long enough that greedy decoding runs all `tokens` without reaching an end of sequence.
SINGLE_PROMPT = "The three most important inventions of the twentieth century are"


def _single(tokens: int, rounds: int) -> None:
    plain, engine = [], []
    for i in range(rounds):
        plain.append(float(_in_fresh_process("_plain", tokens)))
        engine.append(float(_in_fresh_process("_engine", tokens)))
        print(f"round {i + 1}: plain {plain[-1]:6.1f} tok/s, engine {engine[-1]:6.1f} tok/s")
    p, e = statistics.median(plain), statistics.median(engine)
    gap = 100 * (1 - e / p)
    verdict = f"{gap:.1f} % slower" if gap >= 0 else f"{-gap:.1f} % faster"
    print(f"median: plain {p:.1f}, engine {e:.1f} tok/s; the engine is {verdict}")


def _in_fresh_process(mode: str, tokens: int) -> str:
    """What this script prints in `mode`, run in a process of its own."""
    command = [sys.executable, __file__, mode, "--tokens", str(tokens)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _plain_single(tokens: int) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=str(MODEL), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    prompt = llm.tokenize(SINGLE_PROMPT.encode(), add_bos=True, special=True)

    def tokens_iter():  # type: ignore[no-untyped-def]
        for j, token in enumerate(llm.generate(prompt, temp=0, top_k=1, reset=True)):
            yield token
            if j + 1 >= tokens:
                return

    return _decode_speed(tokens_iter)


def _engine_single(tokens: int) -> float:
    from inferq.workers.engine import GenerationRequest, SamplingParams
    from inferq.workers.llamacpp import LlamaCppEngine

    params = SamplingParams(max_tokens=tokens, temperature=0)
    engine = LlamaCppEngine("gemma-3-270m", MODEL, 2048, None, slots=8)
    engine.load()
    try:
        return _decode_speed(engine.generate(GenerationRequest(SINGLE_PROMPT, params)))
    finally:
        engine.unload()


def _decode_speed(tokens: object) -> float:
    """Tokens/s from the first token to the last (prompt evaluation excluded).

    `tokens` is an iterator of tokens, or a function that starts one.
    """
    it = tokens() if callable(tokens) else tokens
    next(it)  # type: ignore[call-overload]
    start, n = time.perf_counter(), 0
    for _ in it:
        n += 1
    return n / (time.perf_counter() - start)


async def _stack(url: str, tokens: int) -> None:
    import httpx

    headers = {}
    if key := os.environ.get("INFERQ_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as client:
        for n in (1, 2, 4, 8):
            body = {"model": "gemma-3-270m", "max_tokens": tokens, "temperature": 0}
            start = time.perf_counter()
            ids = []
            for p in PROMPTS[:n]:
                response = await client.post("/v1/jobs", json={**body, "prompt": p})
                response.raise_for_status()
                ids.append(response.json()["id"])
            done = await asyncio.gather(*(_wait(client, i) for i in ids))
            wall = time.perf_counter() - start
            produced = sum(job["usage"]["completion_tokens"] for job in done)
            print(f"stack n={n}: {produced / wall:7.1f} tok/s aggregate ({produced} tokens)")


async def _wait(client: object, job_id: str) -> dict[str, object]:
    while True:
        job: dict[str, object] = (await client.get(f"/v1/jobs/{job_id}")).json()  # type: ignore[attr-defined]
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # The modes with a "_" run in a fresh process that `engine` or `single` starts for them.
    modes = ["engine", "single", "churn", "stack", "_plain", "_engine", "_exact", "_inexact"]
    parser.add_argument("mode", choices=modes)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="single: rounds")
    parser.add_argument("--seconds", type=float, default=20, help="churn: seconds per level")
    args = parser.parse_args()
    if args.mode == "engine":
        plain = float(_in_fresh_process("_plain", args.tokens))
        print(f"plain Llama.generate decode: {plain:7.1f} tok/s")
        for mode in ("_exact", "_inexact"):
            print(_in_fresh_process(mode, args.tokens))
    elif args.mode in ("_exact", "_inexact"):
        _engine_rounds(args.tokens, exact=args.mode == "_exact")
    elif args.mode == "churn":
        _churn(args.tokens, args.seconds)
    elif args.mode == "single":
        _single(args.tokens, args.rounds)
    elif args.mode == "_plain":
        print(f"{_plain_single(args.tokens):.2f}")
    elif args.mode == "_engine":
        print(f"{_engine_single(args.tokens):.2f}")
    else:
        asyncio.run(_stack(args.url, args.tokens))


if __name__ == "__main__":
    main()
