"""What every scenario shares: the configuration, the targets, the runs so far."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from inferq.bench.clients import Target
from inferq.bench.progress import Progress
from inferq.bench.stats import Run, Sample

# The order targets run in, when present: the floor first, then inferq, then the peers.
ORDER = ["floor", "inferq-jobs", "inferq-openai", "llama-server", "litellm"]


@dataclass
class BenchConfig:
    api: str
    model: str
    max_tokens: int = 32
    requests: int = 20
    warmup: int = 2
    levels: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    rounds: int = 1
    min_requests: int = 8
    cache_requests: int = 100
    capacity_seconds: float = 5.0
    capacity_concurrency: int = 32
    capacity_rounds: int = 2
    mixed_seconds: float = 20.0
    streams: int = 1000
    stream_hold_s: float = 5.0
    idle_model: str = "echo"
    l2_entries: int = 0
    database_url: str = ""
    api_pid: int | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass
class Context:
    config: BenchConfig
    api: httpx.AsyncClient
    targets: dict[str, Target]
    progress: Progress
    runs: list[Run] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    # Seeds unique across runs: a seed is part of every cache key, so no generation run is
    # ever answered from a cache filled by an earlier run (LiteLLM's Redis keeps its entries).
    _seeds: itertools.count[int] = field(
        default_factory=lambda: itertools.count(random.randrange(2**30))
    )

    def seed(self) -> int:
        return next(self._seeds)

    def present(self, *names: str) -> list[str]:
        return [name for name in ORDER if name in self.targets and (not names or name in names)]

    def skip(self, key: str, reason: str) -> None:
        self.skipped[key] = reason
        self.progress.note(f"skipped {key}: {reason}")


async def closed_loop(
    call: Callable[[int], Awaitable[Sample]],
    concurrency: int,
    progress: Progress,
    total: int | None = None,
    seconds: float | None = None,
) -> tuple[list[Sample], float]:
    """`concurrency` clients, each sending its next request when the last one ends, until
    `total` requests were sent or `seconds` passed. Returns the samples and the wall time."""
    counter = itertools.count()
    samples: list[Sample] = []
    deadline = time.perf_counter() + seconds if seconds is not None else None

    async def client() -> None:
        while deadline is None or time.perf_counter() < deadline:
            index = next(counter)
            if total is not None and index >= total:
                return
            sample = await call(index)
            samples.append(sample)
            progress.tick(sample)

    started = time.perf_counter()
    width = concurrency if total is None else min(concurrency, total)
    await asyncio.gather(*(client() for _ in range(width)))
    return samples, time.perf_counter() - started
