"""L2 quality: precision and recall of the semantic cache at several cosine thresholds.

Two views, both with all-MiniLM-L6-v2 exactly as the cache embeds (unit vectors, cosine):

- pairs: each paraphrase pair should hit, each look-alike pair should not.
- retrieval (the cache's real situation): every first prompt of both files is stored; each
  second prompt is looked up against all of them. A hit is right only when a paraphrase finds
  its own partner; any hit for a look-alike query, or on another entry, is a wrong answer.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/cache_eval/evaluate.py [--min-precision 0.97]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from inferq.cache.guard import compatible

HERE = Path(__file__).parent
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)


def read_pairs(name: str) -> list[tuple[str, str]]:
    pairs = []
    for line in (HERE / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            a, b = line.split(" || ")
            pairs.append((a.strip(), b.strip()))
    return pairs


def embed(texts: list[str]) -> np.ndarray:
    from inferq.embeddings import Embedder
    from inferq.settings import get_settings

    embedder = Embedder(get_settings().model_dir)
    embedder._load()  # synchronous load: this is a script, not the API
    return embedder._encode(texts)


def pair_scores(pos: list[tuple[str, str]], neg: list[tuple[str, str]]) -> tuple[np.ndarray, ...]:
    texts = [t for pair in pos + neg for t in pair]
    vectors = embed(texts)
    a, b = vectors[0::2], vectors[1::2]
    sims = np.sum(a * b, axis=1)
    return sims[: len(pos)], sims[len(pos) :], vectors


def pr(
    pos: np.ndarray, neg: np.ndarray, t: float, pos_ok: np.ndarray, neg_ok: np.ndarray
) -> tuple[float, float]:
    tp, fp = int(np.sum((pos >= t) & pos_ok)), int(np.sum((neg >= t) & neg_ok))
    return (tp / (tp + fp) if tp + fp else 1.0), tp / len(pos)


def retrieval(
    pos: list[tuple[str, str]],
    neg: list[tuple[str, str]],
    vectors: np.ndarray,
    t: float,
    guarded: bool,
) -> tuple[float, float, int]:
    """Precision, recall and wrong hits when the second prompts query all first prompts."""
    firsts = [p[0] for p in pos + neg]
    stored = sorted(set(firsts))
    where = {text: i for i, text in enumerate(stored)}
    first_vectors = vectors[0::2]
    matrix = np.stack([first_vectors[firsts.index(text)] for text in stored])
    queries = vectors[1::2]
    right = wrong = 0
    for i, query in enumerate(queries):
        scores = matrix @ query
        best = int(np.argmax(scores))
        if scores[best] < t:
            continue
        if guarded and not compatible((pos + neg)[i][1], stored[best]):
            continue
        is_paraphrase = i < len(pos)
        if is_paraphrase and best == where[firsts[i]]:
            right += 1
        else:
            wrong += 1
    hits = right + wrong
    return (right / hits if hits else 1.0), right / len(pos), wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-precision", type=float, default=0.97)
    args = parser.parse_args()
    pos, neg = read_pairs("paraphrases.txt"), read_pairs("lookalikes.txt")
    pos_s, neg_s, vectors = pair_scores(pos, neg)
    print(f"{len(pos)} paraphrase pairs, {len(neg)} look-alike pairs")
    print(
        f"cosine paraphrase p10/p50 {np.percentile(pos_s, 10):.3f}/{np.median(pos_s):.3f}; "
        f"look-alike p50/p90/max {np.median(neg_s):.3f}/{np.percentile(neg_s, 90):.3f}/"
        f"{neg_s.max():.3f}"
    )
    lookups = len(pos) + len(neg)
    everything = np.ones(len(pos), bool), np.ones(len(neg), bool)
    checked = (
        np.array([compatible(b, a) for a, b in pos]),
        np.array([compatible(b, a) for a, b in neg]),
    )
    chosen = None
    for guarded, (pos_ok, neg_ok) in ((False, everything), (True, checked)):
        print(f"\n{'cosine AND lexical guard' if guarded else 'cosine only'}:\n")
        print(
            "| threshold | pair precision | pair recall | retrieval precision "
            f"| retrieval recall | wrong hits (of {lookups} lookups) |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for t in THRESHOLDS:
            p, r = pr(pos_s, neg_s, t, pos_ok, neg_ok)
            rp, rr, wrong = retrieval(pos, neg, vectors, t, guarded)
            print(f"| {t:.2f} | {p:.3f} | {r:.3f} | {rp:.3f} | {rr:.3f} | {wrong} |")
            if guarded and chosen is None and min(p, rp) >= args.min_precision:
                chosen = t
    print(f"\nlowest threshold with the guard and precision >= {args.min_precision}: {chosen}")


if __name__ == "__main__":
    main()
