"""Scenarios that generate: `latency` (one stream at a time, targets interleaved request by
request) and `sweep` (closed-loop concurrency levels, targets interleaved level by level)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from inferq.bench.clients import Target
from inferq.bench.context import Context, closed_loop
from inferq.bench.prompts import GENERATION
from inferq.bench.stats import Run, Sample, distribution, percentile


async def latency(ctx: Context) -> None:
    names = ctx.present()
    config = ctx.config
    runs = {name: Run("latency", name, 1) for name in names}
    ctx.progress.start(f"latency warmup x{config.warmup}", config.warmup * len(names))
    for index in range(config.warmup):
        for name in names:
            ctx.progress.tick(await _one(ctx, name, index))
    ctx.progress.start("latency", config.requests * len(names))
    for index in range(config.requests):
        # Rotate who goes first, so no target always runs right after the same neighbour.
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            sample = await _one(ctx, name, index)
            runs[name].samples.append(sample)
            runs[name].wall_s += sample.e2e_ms / 1000
            ctx.progress.tick(sample)
    _compare_to_floor(runs)
    ctx.runs.extend(runs.values())


async def _one(ctx: Context, name: str, index: int) -> Sample:
    prompt = GENERATION[index % len(GENERATION)]
    return await ctx.targets[name].stream(prompt, ctx.config.max_tokens, ctx.seed())


def generator(ctx: Context, target: Target) -> Callable[[int], Awaitable[Sample]]:
    """Request `index` of a closed loop: the next prompt, a fresh seed (no cache hit)."""

    async def call(index: int) -> Sample:
        prompt = GENERATION[index % len(GENERATION)]
        return await target.stream(prompt, ctx.config.max_tokens, ctx.seed())

    return call


def _compare_to_floor(runs: dict[str, Run]) -> None:
    """TTFT added over the floor, paired request by request (same prompt, same moment)."""
    floor = runs.get("floor")
    if floor is None:
        return
    floor_tpot = [t for s in floor.samples if (t := s.tpot_ms) is not None]
    for name, run in runs.items():
        if name == "floor":
            continue
        added = [
            s.ttft_ms - f.ttft_ms
            for s, f in zip(run.samples, floor.samples, strict=True)
            if s.ok and f.ok and s.ttft_ms is not None and f.ttft_ms is not None
        ]
        run.extra["ttft_added_ms"] = distribution(added)
        tpot = [t for s in run.samples if (t := s.tpot_ms) is not None]
        if tpot and floor_tpot:
            ratio = percentile(tpot, 0.5) / percentile(floor_tpot, 0.5)
            run.extra["tpot_ratio_to_floor_p50"] = round(ratio, 4)


async def sweep(ctx: Context) -> None:
    """Each level: every target (the floor only at 1: one in-process Llama is one sequence)."""
    config = ctx.config
    for level in config.levels:
        for name in ctx.present():
            if name == "floor" and level > 1:
                continue
            # At least `min_requests` per level, so low levels are not judged on one request.
            total = max(level * config.rounds, config.min_requests)
            ctx.progress.start(f"sweep {name} c={level}", total)
            call = generator(ctx, ctx.targets[name])
            samples, wall = await closed_loop(call, level, ctx.progress, total=total)
            ctx.runs.append(Run("sweep", name, level, samples, wall))
