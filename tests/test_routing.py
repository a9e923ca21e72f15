"""Pool choice among the live workers of one model version, by load and adapter."""

from __future__ import annotations

import random
from typing import Any

from inferq.queue.names import pool_queue_name, queue_name
from inferq.registry.routing import pools_of, rank, with_adapter


def _worker(wid: str, version: str | None, pool: str = "", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": wid, "engine": "echo", "model": "echo", "slots": 4}
    if version is not None:
        record.update(model_version=version, pool=pool)
        record["queue"] = pool_queue_name("echo", "echo", version, pool)
    else:
        record["queue"] = queue_name("echo", "echo")  # a worker from before the registry
    return {**record, **extra}


def test_the_default_version_keeps_the_plain_queue() -> None:
    assert pool_queue_name("echo", "echo", "1.0.0") == queue_name("echo", "echo")
    assert pool_queue_name("echo", "echo", None) == queue_name("echo", "echo")
    assert pool_queue_name("echo", "echo", "2.0.0") == "inferq.echo.echo@2.0.0"
    assert pool_queue_name("echo", "echo", "2.0.0", "gpu") == "inferq.echo.echo@2.0.0/gpu"


def test_pools_group_workers_of_one_version() -> None:
    workers = [
        _worker("a", None, slots_busy=1),
        _worker("b", "1.0.0", slots_busy=2),
        _worker("c", "2.0.0"),
        _worker("d", "2.0.0", "gpu", adapters=["sql-lora"]),
        {**_worker("e", "2.0.0"), "model": "other"},
    ]
    v1 = pools_of(workers, "echo", "echo", "1.0.0")
    assert list(v1) == [queue_name("echo", "echo")]
    assert v1[queue_name("echo", "echo")].workers == 2
    assert v1[queue_name("echo", "echo")].free == 5
    v2 = pools_of(workers, "echo", "echo", "2.0.0")
    assert sorted(p.pool for p in v2.values()) == ["", "gpu"]
    assert [p.pool for p in with_adapter(v2.values(), "sql-lora")] == ["gpu"]
    assert with_adapter(v2.values(), "missing") == []


def test_rank_prefers_free_slots_minus_queue_depth() -> None:
    workers = [_worker("a", "2.0.0", "x", slots_busy=3), _worker("b", "2.0.0", "y")]
    pools = pools_of(workers, "echo", "echo", "2.0.0")
    assert rank(pools.values())[0].pool == "y"  # 4 free vs 1 free
    pools[pool_queue_name("echo", "echo", "2.0.0", "y")].depth = 10  # but a long queue
    assert rank(pools.values())[0].pool == "x"


def test_equal_pools_share_the_traffic() -> None:
    workers = [_worker("a", "2.0.0", "x"), _worker("b", "2.0.0", "y")]
    pools = list(pools_of(workers, "echo", "echo", "2.0.0").values())
    rng = random.Random(7)
    firsts = [rank(pools, rng)[0].pool for _ in range(1000)]
    assert 400 < firsts.count("x") < 600
