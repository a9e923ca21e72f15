"""How long `POST /v1/jobs` takes to accept a miss, with the caches on and off, interleaved.

The time to the 202 is the API's whole share of a job's TTFT before the worker's: lookups,
admission, the INSERT and COMMIT, the enqueue. Every request carries a fresh seed (part of
every cache key), so each one is a miss; `max_tokens` 1 keeps the worker's share small.
The stack must be running (`bench/stack.sh start`, then `eval "$(bench/stack.sh env)"`):

    python bench/submit_latency.py --api http://127.0.0.1:8771 --runs 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from typing import Any

import httpx

from inferq.catalog import BUNDLED_MODEL

PROMPT = "The three most important inventions of the twentieth century are"
_PAUSE_S = 0.15  # lets the previous job finish, so each POST meets an idle worker


def _body(cache: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": BUNDLED_MODEL, "prompt": PROMPT, "max_tokens": 1,
                            "temperature": 0, "seed": random.randrange(2**31)}  # fmt: skip
    if not cache:
        body["cache"] = {"mode": "off"}
    return body


async def run(api: str, key: str | None, runs: int, warmup: int) -> dict[str, list[float]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    times: dict[str, list[float]] = {"cache on": [], "cache off": []}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:
        for index in range(warmup + runs):
            for label in times:
                started = time.perf_counter()
                (await client.post("/v1/jobs", json=_body(label == "cache on"))).raise_for_status()
                if index >= warmup:
                    times[label].append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(_PAUSE_S)
            print(f"\rrun {index + 1}/{warmup + runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8771")
    parser.add_argument("--key", default=os.environ.get("INFERQ_API_KEY"))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    times = asyncio.run(run(args.api, args.key, args.runs, args.warmup))
    print("| POST /v1/jobs, a miss | p50 ms | p90 ms |\n| --- | --- | --- |")
    for label, values in times.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"| {label} | {statistics.median(values):.2f} | {p90:.2f} |")


if __name__ == "__main__":
    main()
