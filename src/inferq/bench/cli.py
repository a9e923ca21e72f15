"""`inferq bench`: run the scenarios against inferq and its peers, write JSON, markdown, PNGs.

inferq bench --scenarios latency,sweep --requests 20      # stack and peers already up
inferq bench --help
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from inferq.bench import caching, generation, mixed, report, streams
from inferq.bench.clients import InferqJobs, InProcessFloor, OpenAICompletions, Target
from inferq.bench.context import ORDER, BenchConfig, Context
from inferq.bench.plots import plot
from inferq.bench.procmem import listening_pid
from inferq.bench.progress import Progress
from inferq.settings import Settings, get_settings

SCENARIOS: dict[str, Callable[[Context], Awaitable[None]]] = {
    "latency": generation.latency,
    "sweep": generation.sweep,
    "cache": caching.cache,
    "capacity": caching.capacity,
    "mixed": mixed.mixed,
    "streams": streams.streams,
}
ROOT = Path(__file__).resolve().parents[3]
KEY_FILE = Path("/tmp/inferq-peers/litellm.key")
# The sizes issue 11 sets its targets at.
L2_TARGET_ENTRIES = 100_000
STREAMS_TARGET = 1000


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferq bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--api", default=f"http://{settings.api_host}:{settings.api_port}", help="inferq API")
    add("--api-key", default=os.environ.get("INFERQ_API_KEY"), help="default: $INFERQ_API_KEY")
    add("--model", default=settings.default_model)
    add("--scenarios", default=",".join(SCENARIOS), help="comma list of: " + ", ".join(SCENARIOS))
    add("--targets", default=",".join(ORDER), help="comma list of: " + ", ".join(ORDER))
    add("--llama-server", default="http://127.0.0.1:8772", help="llama_cpp.server (peers.sh)")
    add("--litellm", default="http://127.0.0.1:8773", help="LiteLLM proxy (bench/peers.sh)")
    add("--litellm-key", default=None, help=f"default: $LITELLM_MASTER_KEY, else {KEY_FILE}")
    add("--peers-venv", type=Path, default=ROOT / ".venv-peers", help="to record versions")
    add("--max-tokens", type=int, default=32)
    add("--requests", type=int, default=20, help="latency: requests per target")
    add("--warmup", type=int, default=2)
    add("--levels", default="1,2,4,8,16,32", help="sweep: concurrency levels")
    add("--rounds", type=int, default=1, help="sweep: requests per stream per level")
    add("--min-requests", type=int, default=8, help="sweep: at least this many per level")
    add("--cache-requests", type=int, default=100, help="cache: hits per target and layer")
    add("--capacity-seconds", type=float, default=5.0)
    add("--capacity-concurrency", type=int, default=32)
    add("--capacity-rounds", type=int, default=2, help="capacity: alternations of targets")
    add("--mixed-seconds", type=float, default=20.0)
    add("--streams", type=int, default=1000, help="streams: idle SSE streams")
    add("--stream-hold", type=float, default=5.0, help="streams: seconds held before measuring")
    add("--idle-model", default="echo", help="streams: a model whose worker is very slow")
    add("--l2-entries", type=int, default=0, help="cache: fill L2 to this many entries first")
    add("--database-url", default=settings.database_url, help="cache: where L2 decoys go")
    add("--api-pid", type=int, default=None, help="default: the pid listening on --api's port")
    add("--n-threads", type=int, default=settings.n_threads or os.cpu_count() or 1)
    add("--out", type=Path, default=ROOT / "bench" / "results")
    add("--plots-dir", type=Path, default=None, help="default: --out")
    add("--quiet", action="store_true", help="no progress line")
    return p


def config_of(args: argparse.Namespace) -> BenchConfig:
    port = httpx.URL(args.api).port or 80
    return BenchConfig(
        api=args.api,
        model=args.model,
        max_tokens=args.max_tokens,
        requests=args.requests,
        warmup=args.warmup,
        levels=[int(x) for x in args.levels.split(",")],
        rounds=args.rounds,
        min_requests=args.min_requests,
        cache_requests=args.cache_requests,
        capacity_seconds=args.capacity_seconds,
        capacity_concurrency=args.capacity_concurrency,
        capacity_rounds=args.capacity_rounds,
        mixed_seconds=args.mixed_seconds,
        streams=args.streams,
        stream_hold_s=args.stream_hold,
        idle_model=args.idle_model,
        l2_entries=args.l2_entries,
        database_url=args.database_url,
        api_pid=args.api_pid or listening_pid(port),
        api_key=args.api_key,
    )


def _litellm_key(args: argparse.Namespace) -> str | None:
    if args.litellm_key:
        return str(args.litellm_key)
    if key := os.environ.get("LITELLM_MASTER_KEY"):
        return key
    try:
        return KEY_FILE.read_text().strip() or None
    except OSError:
        return None


def _bearer(key: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {key}"} if key else None


def _clients(args: argparse.Namespace) -> dict[str, httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    timeout = httpx.Timeout(600.0, connect=10.0)

    def client(url: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, headers=headers)

    clients = {"inferq": client(args.api, _bearer(args.api_key))}
    if args.llama_server:
        clients["llama-server"] = client(args.llama_server)
    if args.litellm:
        clients["litellm"] = client(args.litellm, _bearer(_litellm_key(args)))
    return clients


def _targets(args: argparse.Namespace, clients: dict[str, httpx.AsyncClient]) -> dict[str, Target]:
    model, wanted = args.model, set(args.targets.split(","))
    targets: dict[str, Target] = {
        "inferq-jobs": InferqJobs(clients["inferq"], model),
        "inferq-openai": OpenAICompletions("inferq-openai", clients["inferq"], model),
    }
    for peer in ("llama-server", "litellm"):
        if peer in clients:
            targets[peer] = OpenAICompletions(peer, clients[peer], model)
    floor = _floor(args)
    if floor is not None:
        targets["floor"] = floor
    return {name: t for name, t in targets.items() if name in wanted}


def _floor(args: argparse.Namespace) -> InProcessFloor | None:
    from inferq.catalog import resolve_model

    try:
        spec = resolve_model(get_settings(), args.model)
    except Exception:  # an unknown model: the API will say so; there is just no floor
        return None
    path = getattr(spec, "path", None)
    if spec.engine != "llamacpp" or not isinstance(path, Path):
        return None
    return InProcessFloor(path, args.n_threads)


async def _check(ctx: Context) -> None:
    for name in list(ctx.targets):
        why = await ctx.targets[name].available()
        if why is None and name == "inferq-openai":
            why = await _route_missing(ctx.api, "/v1/completions")
        if why is not None:
            del ctx.targets[name]
            ctx.skip(name, why)


async def _route_missing(client: httpx.AsyncClient, path: str) -> str | None:
    """None when the route exists: an empty body is refused (4xx) rather than not found."""
    response = await client.post(path, json={})
    return f"{path} is not served (HTTP 404)" if response.status_code == 404 else None


def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = Path("/proc/meminfo").read_text().split()[1]
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(int(mem) / 2**20, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    info["peers"] = _peer_versions(args.peers_venv)
    info["summary"] = (
        f"{info['cores']} x {cpu}, {info['mem_gib']} GiB, Python {info['python']}, "
        f"load at start {info['loadavg_start'][0]:.2f}"
    )
    return info


def _peer_versions(venv: Path) -> list[str]:
    pip = venv / "bin" / "pip"
    if not pip.exists():
        return []
    frozen = subprocess.run([str(pip), "freeze"], capture_output=True, text=True, check=False)
    return [
        line
        for line in frozen.stdout.splitlines()
        if "litellm" in line.lower() or "llama" in line.lower()
    ]


async def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    config = config_of(args)
    clients = _clients(args)
    progress = Progress(enabled=not args.quiet)
    ctx = Context(config, clients["inferq"], _targets(args, clients), progress)
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "version": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "command": "inferq bench " + shlex.join(argv),
        "machine": machine(args),
    }
    try:
        await _check(ctx)
        for name in args.scenarios.split(","):
            if name not in SCENARIOS:
                raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
            began = time.perf_counter()
            await SCENARIOS[name](ctx)
            progress.note(f"{name} done in {time.perf_counter() - began:.1f} s")
    finally:
        for client in clients.values():
            await client.aclose()
    summaries = [r.summary(keep_samples=r.scenario in ("latency", "sweep")) for r in ctx.runs]
    result["machine"]["loadavg_end"] = os.getloadavg()
    result.update(
        config={k: v for k, v in vars(config).items() if k != "api_key"},
        targets=list(ctx.targets),
        skipped=ctx.skipped,
        runs=summaries,
        ratios=report.ratios(summaries),
        verdicts=report.verdicts(summaries, L2_TARGET_ENTRIES, STREAMS_TARGET),
    )
    return result


def run_bench(argv: list[str]) -> int:
    settings = get_settings()
    args = build_parser(settings).parse_args(argv)
    result = asyncio.run(run(args, argv))
    stem = "bench-" + result["started_at"].replace(":", "").replace("+0000", "Z")
    json_path, md_path = report.write(result, args.out, stem)
    pngs = plot(result, args.plots_dir or args.out, stem)
    print(md_path.read_text())
    print(f"wrote {json_path}, {md_path}" + "".join(f", {p}" for p in pngs))
    return 0
