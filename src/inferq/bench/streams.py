"""`streams`: many idle SSE streams held open against one API process.

Each stream follows its own job on `--idle-model` (default `echo`), served by a worker that
takes a long time per token (an echo worker with INFERQ_ECHO_TOKEN_DELAY_S=60): one job runs,
the rest wait in the queue, and every stream stays idle: nothing but keepalives. The API's
resident memory is read from /proc before and after the streams open; at the end every job
is cancelled, and each stream should then receive its job's `end` event and close.
"""

from __future__ import annotations

import asyncio
import gc
import time

import httpx

from inferq.bench.context import Context
from inferq.bench.procmem import open_fds, rss_kb
from inferq.bench.stats import Run, Sample


async def streams(ctx: Context) -> None:
    config, pid = ctx.config, ctx.config.api_pid
    ctx.progress.start(f"streams: submitting {config.streams} idle jobs", config.streams)
    job_ids, refusal = await _submit(ctx, config.streams)
    if len(job_ids) < config.streams:
        ctx.skip("streams", f"{len(job_ids)}/{config.streams} idle jobs accepted; {refusal}")
    if not job_ids:
        return
    limits = httpx.Limits(max_connections=config.streams + 16, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, read=None)
    client = httpx.AsyncClient(
        base_url=ctx.api.base_url, headers=ctx.api.headers, limits=limits, timeout=timeout
    )
    async with client as c:
        gc.collect()
        await asyncio.sleep(1.0)
        before = (rss_kb(pid), open_fds(pid)) if pid else (None, None)
        opened = [asyncio.Event() for _ in job_ids]
        ctx.progress.start(f"streams: opening {len(job_ids)}", len(job_ids))
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(_hold(c, job_id, ev, ctx))
            for job_id, ev in zip(job_ids, opened, strict=True)
        ]
        await _wait_open(opened, tasks, timeout_s=120)
        open_s = time.perf_counter() - started
        await asyncio.sleep(config.stream_hold_s)
        after = (rss_kb(pid), open_fds(pid)) if pid else (None, None)
        still_open = sum(not t.done() for t in tasks)
        ctx.progress.start("streams: cancelling the jobs", len(job_ids))
        await _cancel_all(ctx, job_ids)
        samples = await _collect(tasks, timeout_s=120)
    ctx.runs.append(_run(len(job_ids), samples, open_s, before, after, still_open, config))


def _run(
    n: int,
    samples: list[Sample],
    open_s: float,
    before: tuple[int | None, int | None],
    after: tuple[int | None, int | None],
    still_open: int,
    config: object,
) -> Run:
    per_stream = None
    if before[0] is not None and after[0] is not None and n:
        per_stream = round((after[0] - before[0]) / n, 3)
    extra = {
        "streams_open_at_hold_end": still_open,
        "open_all_s": round(open_s, 3),
        "api_rss_kb_before": before[0],
        "api_rss_kb_after": after[0],
        "api_rss_kb_per_stream": per_stream,
        "api_fds_before": before[1],
        "api_fds_after": after[1],
    }
    return Run("streams", "inferq-jobs", n, samples, open_s, label="idle-sse", extra=extra)


async def _submit(ctx: Context, count: int) -> tuple[list[str], str]:
    semaphore = asyncio.Semaphore(32)
    refusals: list[str] = []
    body = {
        "model": ctx.config.idle_model,
        "prompt": "idle",
        "max_tokens": 1,
        "cache": {"mode": "off"},
    }

    async def one() -> str | None:
        async with semaphore:
            started = time.perf_counter()
            try:
                response = await ctx.api.post("/v1/jobs", json=body)
            except httpx.HTTPError as exc:
                ctx.progress.tick(Sample(False, type(exc).__name__, 0.0))
                return None
            ok = response.status_code == 202
            if not ok:
                refusals.append(f"HTTP {response.status_code}: {response.text[:300]}")
            ctx.progress.tick(Sample(ok, str(response.status_code), time.perf_counter() - started))
            return str(response.json()["id"]) if ok else None

    ids = await asyncio.gather(*(one() for _ in range(count)))
    return [job_id for job_id in ids if job_id is not None], (refusals or [""])[0]


async def _hold(
    client: httpx.AsyncClient, job_id: str, opened: asyncio.Event, ctx: Context
) -> Sample:
    """Open the stream, then read until the job's `end` (sent when it is cancelled)."""
    started = time.perf_counter()
    try:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            opened.set()
            status = str(response.status_code)
            ctx.progress.tick(Sample(response.status_code == 200, status, 0.0))
            if response.status_code != 200:
                return Sample(False, status, (time.perf_counter() - started) * 1000)
            async for line in response.aiter_lines():
                if line.startswith("event: end"):
                    return Sample(True, "200", (time.perf_counter() - started) * 1000)
        return Sample(False, "stream_cut", (time.perf_counter() - started) * 1000)
    except httpx.HTTPError as exc:
        opened.set()
        return Sample(False, type(exc).__name__, (time.perf_counter() - started) * 1000)


async def _wait_open(
    opened: list[asyncio.Event], tasks: list[asyncio.Task[Sample]], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    for event, task in zip(opened, tasks, strict=True):
        remaining = max(0.0, deadline - time.monotonic())
        waiter = asyncio.ensure_future(event.wait())
        await asyncio.wait({waiter, task}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()


async def _collect(tasks: list[asyncio.Task[Sample]], timeout_s: float) -> list[Sample]:
    """Each stream's outcome; one still open after `timeout_s` counts as `no_end`."""
    await asyncio.wait(tasks, timeout=timeout_s)
    samples = []
    for task in tasks:
        if task.done():
            samples.append(task.result())
        else:
            task.cancel()
            samples.append(Sample(False, "no_end", timeout_s * 1000))
    await asyncio.gather(*tasks, return_exceptions=True)
    return samples


async def _cancel_all(ctx: Context, job_ids: list[str]) -> None:
    semaphore = asyncio.Semaphore(32)

    async def cancel(job_id: str) -> None:
        async with semaphore:
            started = time.perf_counter()
            try:
                response = await ctx.api.post(f"/v1/jobs/{job_id}/cancel")
                ok = response.status_code == 200
                ctx.progress.tick(
                    Sample(ok, str(response.status_code), time.perf_counter() - started)
                )
            except httpx.HTTPError as exc:
                ctx.progress.tick(Sample(False, type(exc).__name__, 0.0))

    await asyncio.gather(*(cancel(job_id) for job_id in job_ids))
