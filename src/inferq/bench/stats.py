"""Samples of one request each, and their summaries (p50/p95/p99) per run."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One request as the client saw it. Times in milliseconds from sending the request."""

    ok: bool
    status: str  # the HTTP status, or the name of the exception that ended the request
    e2e_ms: float
    ttft_ms: float | None = None
    tokens: int = 0
    cache: str | None = None  # x-inferq-cache (or a peer's equivalent), when the target says

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first; None with fewer than two tokens."""
        if self.ttft_ms is None or self.tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.tokens - 1)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def distribution(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 3),
        "p50": round(percentile(values, 0.50), 3),
        "p95": round(percentile(values, 0.95), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
    }


@dataclass
class Run:
    """The samples of one target in one scenario at one concurrency, and the wall time."""

    scenario: str
    target: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    label: str = ""  # e.g. "l1", "l2" inside the cache scenario
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, keep_samples: bool = False) -> dict[str, Any]:
        ok = [s for s in self.samples if s.ok]
        tokens = sum(s.tokens for s in ok)
        errors = Counter(s.status for s in self.samples if not s.ok)
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "label": self.label,
            "target": self.target,
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "ok": len(ok),
            "errors": dict(errors),
            "statuses": dict(Counter(s.status for s in self.samples)),
            "wall_s": round(self.wall_s, 4),
            "tokens": tokens,
            "throughput_tok_s": round(tokens / self.wall_s, 3) if self.wall_s else None,
            "requests_per_s": round(len(ok) / self.wall_s, 3) if self.wall_s else None,
            "ttft_ms": distribution([s.ttft_ms for s in ok if s.ttft_ms is not None]),
            "tpot_ms": distribution([t for s in ok if (t := s.tpot_ms) is not None]),
            "e2e_ms": distribution([s.e2e_ms for s in ok]),
            "cache": dict(Counter(s.cache for s in ok if s.cache is not None)),
            **self.extra,
        }
        if keep_samples:
            out["samples"] = [
                {"ttft_ms": s.ttft_ms, "e2e_ms": round(s.e2e_ms, 3), "tokens": s.tokens} for s in ok
            ]
        return out
