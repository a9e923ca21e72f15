"""Which worker pool (queue) serves a request, among the live pools of one model version.

A pool is every live worker consuming one queue. The pick is by load: free slots across the
pool's workers minus the messages already waiting in its queue; the best pools are tried in
order, so a pool whose breaker refuses passes the request to the next one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from inferq.queue.names import DEFAULT_MODEL_VERSION, pool_queue_name


@dataclass
class Pool:
    queue: str
    pool: str
    workers: int = 0
    slots: int = 0
    busy: int = 0
    depth: int = 0
    adapters: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy)

    @property
    def score(self) -> int:
        return self.free - self.depth


def worker_version(worker: dict[str, Any]) -> str:
    """A worker started without a version serves the default one."""
    return str(worker.get("model_version") or DEFAULT_MODEL_VERSION)


def pools_of(
    workers: Iterable[dict[str, Any]], engine: str, model: str, version: str | None
) -> dict[str, Pool]:
    """The live pools of (engine, model, version), by queue."""
    want = version or DEFAULT_MODEL_VERSION
    pools: dict[str, Pool] = {}
    for w in workers:
        if w.get("engine") != engine or w.get("model") != model or worker_version(w) != want:
            continue
        name = str(w.get("pool") or "")
        queue = str(w.get("queue") or pool_queue_name(engine, model, want, name))
        pool = pools.setdefault(queue, Pool(queue=queue, pool=name))
        pool.workers += 1
        pool.slots += int(w.get("slots") or 1)
        pool.busy += int(w.get("slots_busy") or 0)
        pool.adapters.update(str(a) for a in w.get("adapters") or [])
    return pools


def with_adapter(pools: Iterable[Pool], adapter: str | None) -> list[Pool]:
    return [p for p in pools if adapter is None or adapter in p.adapters]


def rank(pools: Iterable[Pool], rng: random.Random | None = None) -> list[Pool]:
    """Pools best first: highest free slots minus queue depth; equals in random order, so
    equally loaded pools share the traffic."""
    rng = rng or random.Random()
    shuffled = list(pools)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda p: p.score, reverse=True)
