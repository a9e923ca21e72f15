"""The L2 index past exact search: recall against exact search, latency, training time.

The evaluation set's first prompts (bench/cache_eval) are stored in one partition with
`--entries` decoys; each second prompt is the query. Recall is the share of queries whose
nearest entry by the cells is the exact nearest; `found@0.85` counts the queries whose exact
nearest reaches the default threshold and is still found. Two kinds of decoy:

- random: unit vectors, as bench/cache_latency.py and the harness seed them;
- near: each a real prompt's vector moved to a cosine of 0.5 to 0.85 from it, so the queries'
  neighbourhoods are crowded and cell borders matter (harder than random).

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/l2_index.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent / "cache_eval"))
from evaluate import embed, read_pairs

from inferq.cache.index import IndexedEntry, PartitionKey, SemanticIndex

KEY: PartitionKey = ("bench", "m", "c", "p")
THRESHOLD = 0.85


def decoys(kind: str, count: int, real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal((count, real.shape[1]), dtype=np.float32)
    if kind == "random":
        out = noise
    else:
        cosine = rng.uniform(0.5, 0.85, size=(count, 1)).astype(np.float32)
        sigma = np.sqrt((1 / cosine**2 - 1) / real.shape[1])  # noise norm ~ sigma * sqrt(d)
        out = real[rng.integers(0, len(real), count)] + sigma * noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


async def measure(kind: str, entries: int, stored: np.ndarray, queries: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    vectors = np.concatenate([stored, decoys(kind, entries, stored, rng)])
    exact, cells = SemanticIndex(exact_max=len(vectors) + 1), SemanticIndex()
    for i, vector in enumerate(vectors):
        entry = IndexedEntry(f"e{i}", "k", 2e9, "p")
        exact.add(KEY, entry, vector)
        cells.add(KEY, entry, vector)
    started = time.perf_counter()
    await cells.settle()
    trained_s = time.perf_counter() - started
    assert cells.is_probed(KEY)
    truth, took = [], []
    for query in queries:
        t0 = time.perf_counter()
        truth.append(exact.search(KEY, query, -1.0))
        took.append(time.perf_counter() - t0)
    reachable = sum(1 for m in truth if m is not None and m.similarity >= THRESHOLD)
    print(
        f"\n{kind} decoys, {len(vectors)} entries; cells trained {trained_s:.2f} s after the "
        f"last add; exact search {pct(took, 50):.2f} / {pct(took, 99):.2f} ms p50 / p99"
    )
    print("| probes | recall@1 | found@0.85 | search p50 | search p99 |")
    print("| --- | --- | --- | --- | --- |")
    for probes in (4, 8, 16, 32, 64):
        cells.probes = probes
        same, found, took = 0, 0, []
        for query, want in zip(queries, truth, strict=True):
            t0 = time.perf_counter()
            got = cells.search(KEY, query, -1.0)
            took.append(time.perf_counter() - t0)
            assert want is not None and got is not None
            same += got.entry.id == want.entry.id
            found += got.entry.id == want.entry.id and want.similarity >= THRESHOLD
        print(
            f"| {probes} | {same / len(queries):.4f} | {found}/{reachable} | "
            f"{pct(took, 50):.3f} ms | {pct(took, 99):.3f} ms |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--kinds", default="random,near")
    args = parser.parse_args()
    pairs = read_pairs("paraphrases.txt") + read_pairs("lookalikes.txt")
    print(f"embedding {2 * len(pairs)} prompts of the evaluation set", flush=True)
    vectors = embed([t for pair in pairs for t in pair])
    stored, queries = vectors[0::2], vectors[1::2]
    for kind in args.kinds.split(","):
        await measure(kind, args.entries, stored, queries)


if __name__ == "__main__":
    asyncio.run(main())
