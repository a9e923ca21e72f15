"""Head-of-line blocking in the embedder: one-input embeddings while a 2,048-input one runs.

Every prompt's L2 lookup goes through the same embedder as `POST /v1/embeddings`, so what a
one-input request waits for behind a large one is what a chat request's semantic lookup
waits for. Against the running stack (`bench/stack.sh start && eval "$(bench/stack.sh env)"`):

    .venv/bin/python bench/embed_hol.py --inputs 2048

Prints the large request's time and the one-input requests' latency while it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx

MODEL = "all-MiniLM-L6-v2"


async def main(api: str, key: str, inputs: int) -> None:
    texts = [f"a short sentence to embed, number {i}, about ten words" for i in range(inputs)]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=300) as client:

        async def large() -> tuple[float, int]:
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json={"model": MODEL, "input": texts})
            return time.perf_counter() - started, response.status_code

        task = asyncio.create_task(large())
        await asyncio.sleep(0.5)  # the large request is being encoded
        latencies: list[float] = []
        while not task.done():
            started = time.perf_counter()
            small = {"model": MODEL, "input": "is the sky blue today?"}
            (await client.post("/v1/embeddings", json=small)).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            print(f"\r{len(latencies)} one-input requests", end="", flush=True)
        seconds, status = await task
    if not latencies:
        print(f"\n{inputs} inputs: {seconds:.2f} s (HTTP {status}), too quick to measure behind")
        return
    latencies.sort()
    print(
        f"\n{inputs} inputs: {seconds:.2f} s (HTTP {status}); one-input requests meanwhile: "
        f"{len(latencies)}, p50 {latencies[len(latencies) // 2]:.0f} ms, "
        f"max {latencies[-1]:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", default=os.environ.get("INFERQ_API", "http://127.0.0.1:8771"))
    parser.add_argument("--key", default=os.environ.get("INFERQ_API_KEY", ""))
    parser.add_argument("--inputs", type=int, default=2048)
    args = parser.parse_args()
    asyncio.run(main(args.api, args.key, args.inputs))
