"""Time from POST /v1/jobs to the first SSE token, minus in-process llama.cpp's time to first token.

Both are measured in the same run, interleaved, on the same prompt, so machine noise hits both
alike. The inferq stack (API + a llama.cpp worker) must already be running at --api.

    python bench/ttft_overhead.py --api http://127.0.0.1:8000 --runs 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

from inferq.catalog import BUNDLED_MODEL, resolve_model
from inferq.settings import get_settings
from inferq.tokenizers import llama_encode

PROMPT = "The three most important inventions of the twentieth century are"


def in_process_ttft(llm: object, prompt: str) -> float:
    """Seconds from the call to the first generated token, as a plain llama.cpp loop sees it."""
    tokens = llama_encode(llm, prompt)
    llm.reset()  # type: ignore[attr-defined]
    started = time.perf_counter()
    for _token in llm.generate(tokens, temp=0.0):  # type: ignore[attr-defined]
        return time.perf_counter() - started
    raise RuntimeError("no token")


async def inferq_ttft(client: httpx.AsyncClient, prompt: str) -> float:
    """Seconds from sending POST /v1/jobs to receiving the first SSE token event."""
    # A fresh seed and no cache: every run must really reach the worker.
    body = {"model": BUNDLED_MODEL, "prompt": prompt, "max_tokens": 1, "temperature": 0,
            "cache": {"mode": "off"}}  # fmt: skip
    started = time.perf_counter()
    job = (await client.post("/v1/jobs", json=body)).raise_for_status().json()
    async with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("event: token"):
                return time.perf_counter() - started
    raise RuntimeError("stream ended without a token")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(api: str, runs: int, warmup: int, key: str | None) -> dict[str, object]:
    from llama_cpp import Llama

    path = resolve_model(get_settings(), BUNDLED_MODEL).path
    assert isinstance(path, Path)
    llm = Llama(model_path=str(path), n_ctx=2048, verbose=False)
    local, remote = [], []
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=api, timeout=60, headers=headers) as client:
        for index in range(warmup + runs):
            a = in_process_ttft(llm, PROMPT)
            b = await inferq_ttft(client, PROMPT)
            if index >= warmup:
                local.append(a * 1000)
                remote.append(b * 1000)
            print(f"\rrun {index + 1}/{warmup + runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    added = [r - lo for r, lo in zip(remote, local, strict=True)]
    return {
        "runs": runs,
        "prompt_tokens": len(llama_encode(llm, PROMPT)),
        "in_process_ttft_ms": {"p50": statistics.median(local), "p99": percentile(local, 0.99)},
        "inferq_ttft_ms": {"p50": statistics.median(remote), "p99": percentile(remote, 0.99)},
        "added_ms": {"p50": statistics.median(added), "p99": percentile(added, 0.99)},
    }


def _saved_key() -> str | None:
    path = get_settings().dev_api_key_file
    return path.read_text().strip() if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--key", default=None, help="API key (default: the one `inferq up` saved)")
    args = parser.parse_args()
    key = args.key or _saved_key()
    result = asyncio.run(run(args.api, args.runs, args.warmup, key))
    print(json.dumps(result, indent=2))
    print("\n| | p50 ms | p99 ms |\n| --- | --- | --- |")
    for key in ("in_process_ttft_ms", "inferq_ttft_ms", "added_ms"):
        row = result[key]
        assert isinstance(row, dict)
        print(f"| {key} | {row['p50']:.2f} | {row['p99']:.2f} |")


if __name__ == "__main__":
    main()
