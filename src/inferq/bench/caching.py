"""Scenarios on cached answers: `cache` (L1 and L2 hits one at a time: end-to-end latency)
and `capacity` (L1 hits from many clients at once: requests per second, one API process).

inferq is driven through both surfaces (REST job + SSE, and /v1/completions), LiteLLM through
/v1/completions; llama-cpp-python's server has no response cache and sits these out. Both
scenarios send their hits through `inferq.bench.lean_http`, every target alike.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from inferq.bench.clients import InferqJobs, OpenAICompletions, Target
from inferq.bench.context import Context, closed_loop
from inferq.bench.l2seed import delete_decoys, seed_decoys
from inferq.bench.lean_http import LeanClient
from inferq.bench.procmem import cpu_seconds
from inferq.bench.prompts import PARAPHRASES
from inferq.bench.stats import Run, Sample

CACHED = ["inferq-jobs", "inferq-openai", "litellm"]


def cache_targets(ctx: Context) -> dict[str, Target]:
    """The targets with a response cache; REST jobs with caching on (the default `semantic`)."""
    targets: dict[str, Target] = {}
    for name in ctx.present(*CACHED):
        targets[name] = ctx.targets[name]
    if "inferq-jobs" in targets:
        targets["inferq-jobs"] = InferqJobs(ctx.api, ctx.config.model, cache_mode="semantic")
    return targets


async def prime(ctx: Context, targets: dict[str, Target]) -> None:
    """Ask every first prompt once per target (a miss that fills the cache), once per run."""
    if "cache_seed" in ctx.facts:
        return
    ctx.facts["cache_seed"] = ctx.seed()
    firsts = [first for first, _ in PARAPHRASES]
    ctx.progress.start("cache: filling", len(firsts) * len(targets))
    for name, target in targets.items():
        for prompt in firsts:
            sample = await target.once(prompt, ctx.config.max_tokens, ctx.facts["cache_seed"])
            ctx.progress.tick(sample)
            if not sample.ok:
                ctx.skip(f"cache:{name}", f"filling failed: {sample.status}")
    await asyncio.sleep(1.0)  # fills are written as the jobs end; let the last one land


def _hit(sample: Sample, layer: str) -> Sample:
    """A sample that was not the hit it should be counts as an error, `not_a_hit`."""
    marker = sample.cache
    if sample.ok and marker is not None and not marker.startswith(layer):
        sample.ok, sample.status = False, "not_a_hit"
    return sample


async def cache(ctx: Context) -> None:
    targets = cache_targets(ctx)
    if not targets:
        ctx.skip("cache", "no target with a cache is up")
        return
    await prime(ctx, targets)
    targets = {n: t for n, t in targets.items() if f"cache:{n}" not in ctx.skipped}
    async with lean_targets(targets) as lean:
        await _l1(ctx, lean)
        if "inferq-jobs" in lean:
            await _l2(ctx, lean["inferq-jobs"])


Ask = Callable[[str, int, int], Awaitable[Sample]]  # (prompt, max_tokens, seed) -> Sample


def hit_ways(targets: dict[str, Target]) -> list[tuple[str, str, Ask]]:
    """(target, label, call) for each way a target answers a hit: REST jobs both as POST +
    SSE (`l1`) and as one POST with `Prefer: wait` (`l1-wait`), the others as `l1`."""
    ways: list[tuple[str, str, Ask]] = []
    for name, target in targets.items():
        ways.append((name, "l1", target.once))
        if isinstance(target, InferqJobs):
            ways.append((name, "l1-wait", target.waited))
    return ways


async def _l1(ctx: Context, targets: dict[str, Target]) -> None:
    """Each way of each target, one hit at a time, interleaved."""
    seed, config = ctx.facts["cache_seed"], ctx.config
    calls = [(Run("cache", n, 1, label=label), ask) for n, label, ask in hit_ways(targets)]
    before = await admin_stats(ctx)
    ctx.progress.start("cache: L1 hits", config.cache_requests * len(calls))
    for index in range(config.cache_requests):
        prompt = PARAPHRASES[index % len(PARAPHRASES)][0]
        for run, call in calls:
            sample = _hit(await call(prompt, config.max_tokens, seed), "hit")
            run.samples.append(sample)
            run.wall_s += sample.e2e_ms / 1000
            ctx.progress.tick(sample)
    runs = [run for run, _ in calls]
    _stats_delta(runs, before, await admin_stats(ctx))
    ctx.runs.extend(runs)


async def _l2(ctx: Context, target: Target) -> None:
    seed, config = ctx.facts["cache_seed"], ctx.config
    hits = []
    for first, second in PARAPHRASES:  # which paraphrases L2 answers at all (the guard decides)
        sample = await target.once(second, config.max_tokens, seed)
        if sample.ok and (sample.cache or "").startswith("hit-semantic"):
            hits.append((first, second))
    extra: dict[str, Any] = {"l2_answered": f"{len(hits)}/{len(PARAPHRASES)}"}
    if not hits:
        ctx.skip("cache:l2", "no paraphrase was answered by L2")
        return
    if config.l2_entries:
        extra["l2_seeded"] = await _seed(ctx, hits[0][0])
    extra["l2_indexed"] = ((await admin_stats(ctx)).get("semantic") or {}).get("indexed")
    run = Run("cache", "inferq-jobs", 1, label="l2", extra=extra)
    ctx.progress.start(f"cache: L2 hits ({extra['l2_indexed']} indexed)", config.cache_requests)
    for index in range(config.cache_requests):
        sample = await target.once(hits[index % len(hits)][1], config.max_tokens, seed)
        run.samples.append(_hit(sample, "hit-semantic"))
        run.wall_s += sample.e2e_ms / 1000
        ctx.progress.tick(sample)
    ctx.runs.append(run)
    if config.l2_entries and config.database_url:
        await delete_decoys(config.database_url)


async def _seed(ctx: Context, like_prompt: str) -> int:
    """Add decoys until the API's index holds `l2_entries`, and wait for it to load them."""
    config = ctx.config
    indexed = ((await admin_stats(ctx)).get("semantic") or {}).get("indexed") or 0
    missing = config.l2_entries - indexed
    if missing <= 0:
        return 0
    ctx.progress.note(f"cache: seeding {missing} L2 decoys, waiting for the API to load them")
    await seed_decoys(config.database_url, like_prompt, missing)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        semantic = (await admin_stats(ctx)).get("semantic") or {}
        if (semantic.get("indexed") or 0) >= config.l2_entries and not semantic.get("training"):
            return missing  # loaded, and past exact_max its cells trained
        await asyncio.sleep(1.0)
    ctx.skip("cache:l2-seed", "the API did not load the decoys within 180 s")
    return missing


async def admin_stats(ctx: Context) -> dict[str, Any]:
    try:
        response = await ctx.api.get("/v1/admin/cache/stats")
        stats: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return stats
    except Exception:  # the admin surface is a check, not part of the measurement
        return {}


def _stats_delta(runs: list[Run], before: dict[str, Any], after: dict[str, Any]) -> None:
    """inferq's own count of hits during the runs (the OpenAI surface has no cache header)."""
    delta = {}
    for layer, now in (after.get("layers") or {}).items():
        then = (before.get("layers") or {}).get(layer) or {}
        if isinstance(now, dict):
            delta[layer] = {
                k: now.get(k, 0) - then.get(k, 0)
                for k in ("hits", "misses")
                if isinstance(now.get(k), int)
            }
    for run in runs:
        if run.target.startswith("inferq"):
            run.extra["inferq_cache_counts_all_inferq_runs"] = delta


async def capacity(ctx: Context) -> None:
    """L1 hits from `capacity_concurrency` clients for `capacity_seconds`, targets alternated."""
    targets = cache_targets(ctx)
    if not targets:
        ctx.skip("capacity", "no target with a cache is up")
        return
    await prime(ctx, targets)
    async with lean_targets(targets) as lean:
        await _capacity(ctx, lean)


@asynccontextmanager
async def lean_targets(targets: dict[str, Target]) -> AsyncIterator[dict[str, Target]]:
    """Copies of the HTTP targets on the lean client (`inferq.bench.lean_http`), closed after:
    httpx used more CPU per request than the API it measured, on the two cores they share,
    and added its own milliseconds to every hit's latency."""
    copies: dict[str, Target] = {}
    for name, target in targets.items():
        client = getattr(target, "client", None)
        if isinstance(target, InferqJobs | OpenAICompletions) and isinstance(
            client, httpx.AsyncClient
        ):
            target = copy.copy(target)
            target.client = LeanClient.like(client)
        copies[name] = target
    try:
        yield copies
    finally:
        for target in copies.values():  # the copies' clients; the originals serve on
            client = getattr(target, "client", None)
            if isinstance(client, LeanClient):
                await client.aclose()


async def _capacity(ctx: Context, targets: dict[str, Target]) -> None:
    config = ctx.config
    ways = [w for w in hit_ways(targets) if f"cache:{w[0]}" not in ctx.skipped]
    runs = {
        (name, label): Run("capacity", name, config.capacity_concurrency, label=label)
        for name, label, _ in ways
    }
    pid = config.api_pid
    for round_index in range(config.capacity_rounds):
        for name, label, ask in ways:
            rounds = f"round {round_index + 1}/{config.capacity_rounds}"
            ctx.progress.start(f"capacity {name} {label} {rounds}", None)
            cpu = cpu_seconds(pid) if pid and name.startswith("inferq") else None
            samples, wall = await closed_loop(
                hit_caller(ctx, ask),
                config.capacity_concurrency,
                ctx.progress,
                seconds=config.capacity_seconds,
            )
            run = runs[(name, label)]
            run.samples.extend(samples)
            run.wall_s += wall
            if cpu is not None and (spent := cpu_seconds(pid or 0)) is not None:
                run.extra["api_cpu_s"] = round(run.extra.get("api_cpu_s", 0) + spent - cpu, 3)
    for run in runs.values():
        if "api_cpu_s" in run.extra and run.samples:
            run.extra["api_cpu_ms_per_request"] = round(
                1000 * run.extra["api_cpu_s"] / len(run.samples), 4
            )
    ctx.runs.extend(r for r in runs.values() if r.samples)


def hit_caller(ctx: Context, ask: Ask) -> Callable[[int], Awaitable[Sample]]:
    """Request `index` of a closed loop of L1 hits: the filled prompts, the fill's seed."""
    seed = ctx.facts["cache_seed"]

    async def call(index: int) -> Sample:
        prompt = PARAPHRASES[index % len(PARAPHRASES)][0]
        return _hit(await ask(prompt, ctx.config.max_tokens, seed), "hit")

    return call
