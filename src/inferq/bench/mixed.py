"""`mixed`: generation streams, WebSocket chats and cache hits at once, for a fixed time.

Per target family the same mix: 2 REST/completions streams generating, 2 OpenAI streams
(inferq only: LiteLLM's one surface already is), 1 WebSocket chat loop (inferq only), and
4 clients fetching L1 hits. inferq's mix runs first, then LiteLLM's with the same load.
"""

from __future__ import annotations

import asyncio

from inferq.bench.caching import cache_targets, hit_caller, prime
from inferq.bench.clients import InferqWebSocket, Target
from inferq.bench.context import Context, closed_loop
from inferq.bench.generation import generator
from inferq.bench.stats import Run

STREAMS, HIT_CLIENTS, WS_CLIENTS = 2, 4, 1


async def mixed(ctx: Context) -> None:
    cached = cache_targets(ctx)
    await prime(ctx, cached)
    families: list[tuple[str, list[tuple[str, Target, str, int]]]] = []
    if "inferq-jobs" in ctx.targets:
        parts = [("generate", ctx.targets["inferq-jobs"], "stream", STREAMS)]
        if "inferq-openai" in ctx.targets:
            parts.append(("generate", ctx.targets["inferq-openai"], "stream", STREAMS))
        url = str(ctx.api.base_url.copy_with(scheme="ws", path="/v1/ws"))
        ws = InferqWebSocket(url, ctx.config.model, ctx.config.api_key)
        if (why := await ws.available()) is None:
            parts.append(("chat", ws, "stream", WS_CLIENTS))
        else:
            ctx.skip("mixed:inferq-ws", why)
        if "inferq-jobs" in cached:
            parts.append(("l1-hit", cached["inferq-jobs"], "hit", HIT_CLIENTS))
        families.append(("inferq", parts))
    if "litellm" in ctx.targets:
        litellm = ctx.targets["litellm"]
        families.append(
            (
                "litellm",
                [("generate", litellm, "stream", STREAMS), ("l1-hit", litellm, "hit", HIT_CLIENTS)],
            )
        )
    for family, parts in families:
        await _run_family(ctx, family, parts)


async def _run_family(ctx: Context, family: str, parts: list[tuple[str, Target, str, int]]) -> None:
    seconds = ctx.config.mixed_seconds
    ctx.progress.start(f"mixed {family} for {seconds:.0f} s", None)
    calls = [
        closed_loop(
            generator(ctx, target) if how == "stream" else hit_caller(ctx, target.once),
            clients,
            ctx.progress,
            seconds=seconds,
        )
        for _, target, how, clients in parts
    ]
    results = await asyncio.gather(*calls)
    for (kind, target, _, clients), (samples, wall) in zip(parts, results, strict=True):
        ctx.runs.append(Run("mixed", target.name, clients, samples, wall, label=f"{family}:{kind}"))
