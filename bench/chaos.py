"""Chaos harness: streamed jobs through SIGKILLed workers and restarts of Redis and PostgreSQL.

It runs a whole private inferq (its own redis-server, its own PostgreSQL cluster, an API and
several echo workers), so it never touches shared servers. Clients submit jobs and follow
each one over SSE, reconnecting with Last-Event-ID whenever their stream breaks. Meanwhile
the harness SIGKILLs busy workers (and starts replacements), restarts Redis empty, and
restarts PostgreSQL. Then it checks every job and prints a table.

    python bench/chaos.py                    # 200 jobs, 10 kills, 1 Redis + 1 PG restart
    python bench/chaos.py --jobs 30 --kills 3 --pg-restarts 0 --json /tmp/chaos.json
    inferq chaos ...                         # the same
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

PG_BIN = Path("/usr/lib/postgresql/15/bin")
FINAL = ("completed", "failed", "cancelled")


# ---------------------------------------------------------------- private servers


def _as_postgres(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the harness may be run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PrivateRedis:
    """A redis-server that keeps nothing on disk, like the one this system targets."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", tempfile.gettempdir()]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: _redis_ping(self.port), f"redis on {self.port}")

    def stop(self) -> None:
        """SIGKILL: the harshest way to lose every queue and key."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def _redis_ping(port: int) -> bool:
    import redis

    try:
        with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


class PrivatePostgres:
    """A throwaway PostgreSQL cluster with trust auth, on its own port."""

    def __init__(self, port: int):
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="inferq-pg-"))
        self.data = self.root / "data"
        shutil.chown(self.root, "postgres") if os.geteuid() == 0 else None
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        opts = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("start", "-w", "-o", opts, "-l", str(self.root / "log"))

    def stop(self, mode: str = "immediate") -> None:
        self._ctl("stop", "-w", "-m", mode)

    def create_database(self, name: str) -> None:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-qc",
                f'CREATE DATABASE "{name}"',
            ],
            check=True,
        )

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        argv = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args])
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def _wait(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up")


# ---------------------------------------------------------------- inferq processes


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log = (log_dir / f"{name}.log").open("ab")
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def inferq_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "inferq.cli.main", *args]


@dataclass
class ChaosConfig:
    jobs: int = 200
    kills: int = 10
    redis_restarts: int = 1
    pg_restarts: int = 1
    workers: int = 3
    max_tokens: int = 40
    token_delay_s: float = 0.05
    redis_port: int = 6391
    pg_port: int = 5441
    api_port: int = 8732
    seed: int = 1
    outage_s: float = 3.0
    log_dir: str = "/tmp/inferq-chaos-logs"
    deadline_s: float = 600.0


class Cluster:
    """A whole private inferq: servers, API and echo workers."""

    def __init__(self, cfg: ChaosConfig):
        self.cfg = cfg
        self.redis = PrivateRedis(cfg.redis_port)
        self.pg = PrivatePostgres(cfg.pg_port)
        self.log_dir = Path(cfg.log_dir)
        self.env = {
            "INFERQ_REDIS_URL": self.redis.url(0),
            "INFERQ_DATABASE_URL": self.pg.url("inferq"),
            "INFERQ_API_PORT": str(cfg.api_port),
            "INFERQ_ECHO_TOKEN_DELAY_S": str(cfg.token_delay_s),
            "INFERQ_ENV": "test",
            "HF_HUB_OFFLINE": "1",
        }
        self.api: Child | None = None
        self.workers: list[Child] = []
        self._started = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.api_port}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.cfg.pg_port}/inferq"

    def start(self) -> None:
        self.redis.start()
        self.pg.start()
        self.pg.create_database("inferq")
        subprocess.run(inferq_argv("migrate"), env={**os.environ, **self.env}, check=True)
        # A key of its own (the cluster has its own database): every client sends it.
        created = subprocess.run(
            inferq_argv("keys", "create", "--tenant", "chaos", "--tier", "unlimited",
                        "--scopes", "inference,admin"),
            env={**os.environ, **self.env}, check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.auth = {"Authorization": f"Bearer {created.stdout.split()[0]}"}
        for _ in range(self.cfg.workers):
            self.start_worker()
        _wait(self._workers_up, "the echo workers", timeout=90)
        self.api = Child("api", inferq_argv("api"), self.env, self.log_dir)
        _wait(self._ready, "the private API", timeout=90)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _workers_up(self) -> bool:
        import redis

        with redis.Redis(port=self.cfg.redis_port) as client:
            return len(client.keys("inferq:worker:*")) >= self.cfg.workers

    def start_worker(self) -> Child:
        self._started += 1
        argv = inferq_argv("worker", "--engine", "echo", "--model", "echo")
        worker = Child(f"worker-{self._started}", argv, self.env, self.log_dir)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for child in [*self.workers, *([self.api] if self.api else [])]:
            child.stop()
        self.redis.stop()
        self.pg.destroy()


# ---------------------------------------------------------------- clients


@dataclass
class JobTrace:
    """What one client saw of one job."""

    id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    submit_errors: list[int] = field(default_factory=list)


@dataclass
class Outage:
    kind: str
    start: float
    end: float = 0.0


class Recorder:
    """Every HTTP status and its latency, to judge what clients saw during outages."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, int]] = []  # (start, seconds, status; 0 = no answer)

    def add(self, started: float, status: int) -> None:
        self.calls.append((started, time.monotonic() - started, status))


async def _request(
    http: httpx.AsyncClient, rec: Recorder, method: str, url: str, **kw: Any
) -> httpx.Response | None:
    started = time.monotonic()
    try:
        response = await http.request(method, url, **kw)
    except httpx.HTTPError:
        rec.add(started, 0)
        return None
    rec.add(started, response.status_code)
    return response


async def run_client(
    http: httpx.AsyncClient, rec: Recorder, cfg: ChaosConfig, n: int, ids: list[str]
) -> JobTrace:
    trace = JobTrace()
    words = " ".join(f"j{n}w{i}" for i in range(cfg.max_tokens))
    body = {"model": "echo", "prompt": words, "max_tokens": cfg.max_tokens}
    while trace.id is None:
        response = await _request(http, rec, "POST", "/v1/jobs", json=body)
        if response is not None and response.status_code == 202:
            trace.id = response.json()["id"]
            ids.append(trace.id)
        else:
            trace.submit_errors.append(response.status_code if response is not None else 0)
            await asyncio.sleep(0.5)
    while not trace.events or trace.events[-1]["type"] not in ("end", "error"):
        await _follow(http, rec, trace)
    return trace


async def _follow(http: httpx.AsyncClient, rec: Recorder, trace: JobTrace) -> None:
    headers = {"Last-Event-ID": str(trace.events[-1]["seq"])} if trace.events else {}
    started = time.monotonic()
    try:
        async with http.stream(
            "GET", f"/v1/jobs/{trace.id}/events", headers=headers, timeout=30
        ) as response:
            rec.add(started, response.status_code)
            if response.status_code != 200:
                raise httpx.HTTPError(f"status {response.status_code}")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    trace.events.append(json.loads(line[6:]))
                    if trace.events[-1]["type"] in ("end", "error"):
                        return
    except httpx.HTTPError:
        pass
    trace.reconnects += 1
    await asyncio.sleep(0.5)


# ---------------------------------------------------------------- chaos


@dataclass
class Rerun:
    worker: str
    jobs: int
    seconds: list[float]


async def _kill_one(cluster: Cluster, db: asyncpg.Connection, rng: random.Random) -> Rerun | None:
    live = [w for w in cluster.workers if w.process.poll() is None]
    rows = await db.fetch(
        "SELECT id, attempts, worker->>'id' AS wid FROM jobs WHERE status = 'running'"
    )
    busy = [w for w in live if any(r["wid"] and r["wid"].endswith(f".{w.pid}") for r in rows)]
    if not busy:
        return None
    victim = rng.choice(busy)
    victims = [r for r in rows if r["wid"] and r["wid"].endswith(f".{victim.pid}")]
    killed_at = time.time()
    victim.stop(signal.SIGKILL)
    cluster.start_worker()
    seconds = await _rerun_times(db, victims, killed_at)
    return Rerun(victim.name, len(victims), seconds)


async def _rerun_times(
    db: asyncpg.Connection, victims: list[asyncpg.Record], killed_at: float
) -> list[float]:
    """Seconds from the kill to the next attempt's claim, for each job the victim held."""
    waiting = {r["id"]: r["attempts"] for r in victims}
    seconds: list[float] = []
    deadline = time.monotonic() + 60
    while waiting and time.monotonic() < deadline:
        for row in await db.fetch(
            "SELECT id, attempts, status, started_at FROM jobs WHERE id = ANY($1::uuid[])",
            list(waiting),
        ):
            if row["attempts"] > waiting[row["id"]]:
                seconds.append(row["started_at"].timestamp() - killed_at)
                del waiting[row["id"]]
            elif row["status"] in FINAL:
                del waiting[row["id"]]  # it finished (or failed) before the kill landed
        await asyncio.sleep(0.2)
    seconds.extend(float("inf") for _ in waiting)
    return seconds


async def _outage(cluster: Cluster, kind: str, outages: list[Outage], probe: Any) -> None:
    outage = Outage(kind, time.monotonic())
    outages.append(outage)
    server = cluster.redis if kind == "redis" else cluster.pg
    await asyncio.to_thread(server.stop)
    prober = asyncio.create_task(probe())
    await asyncio.sleep(cluster.cfg.outage_s)
    prober.cancel()
    outage.end = time.monotonic()
    await asyncio.to_thread(server.start)


async def chaos_schedule(
    cluster: Cluster,
    cfg: ChaosConfig,
    span_s: float,
    outages: list[Outage],
    reruns: list[Rerun],
    probe: Any,
) -> None:
    rng = random.Random(cfg.seed)
    events = ["kill"] * cfg.kills + ["redis"] * cfg.redis_restarts + ["pg"] * cfg.pg_restarts
    times = sorted(rng.uniform(0.1 * span_s, 0.8 * span_s) for _ in events)
    rng.shuffle(events)
    begin = time.monotonic()
    db = await _connect(cluster.dsn)
    try:
        for at, kind in zip(times, events, strict=True):
            await asyncio.sleep(max(0.0, begin + at - time.monotonic()))
            if kind != "kill":
                await _outage(cluster, kind, outages, probe)
                db.terminate()  # it may have died with the server
                db = await _connect(cluster.dsn)
                continue
            for _ in range(50):  # wait for a busy worker, then kill it
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    rerun = await _kill_one(cluster, db, rng)
                    if rerun is not None:
                        reruns.append(rerun)
                        break
                await asyncio.sleep(0.2)
    finally:
        await db.close()


async def _connect(dsn: str) -> asyncpg.Connection:
    for _ in range(100):
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            return await asyncpg.connect(dsn)
        await asyncio.sleep(0.2)
    return await asyncpg.connect(dsn)


# ---------------------------------------------------------------- checks


@dataclass
class Report:
    jobs: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    stuck: int = 0
    bad_failures: int = 0  # failed other than worker_lost after max attempts
    seq_gaps: int = 0
    seq_duplicates: int = 0
    text_mismatches: int = 0
    restarts_seen: int = 0
    reconnects: int = 0
    kills: int = 0
    rerun_s: list[float] = field(default_factory=list)
    outage_statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    outage_max_error_s: dict[str, float] = field(default_factory=dict)
    non_503_during_redis_outage: int = 0
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rerun_max_s(self) -> float:
        return max(self.rerun_s, default=0.0)

    def ok(self) -> bool:
        return not (
            self.lost
            or self.stuck
            or self.bad_failures
            or self.seq_gaps
            or self.seq_duplicates
            or self.text_mismatches
            or self.non_503_during_redis_outage
            or self.rerun_max_s > 15
        )


def check_trace(trace: JobTrace, row: asyncpg.Record | None, report: Report) -> None:
    report.reconnects += trace.reconnects
    if row is None:
        report.lost += 1
        report.problems.append(f"{trace.id}: no row")
        return
    if row["status"] not in FINAL:
        report.stuck += 1
        report.problems.append(f"{trace.id}: {row['status']}")
        return
    report.completed += row["status"] == "completed"
    if row["status"] == "failed":
        report.failed += 1
        code = json.loads(row["error"] or "{}").get("code")
        if code != "worker_lost" or row["attempts"] < cfg_max_attempts():
            report.bad_failures += 1
            report.problems.append(f"{trace.id}: failed {code} after {row['attempts']} attempts")
    attempts: list[list[dict[str, Any]]] = [[]]
    seen: set[int] = set()
    for event in trace.events:
        if event["seq"] in seen:
            report.seq_duplicates += 1
        seen.add(event["seq"])
        if event["type"] == "restart":
            report.restarts_seen += 1
            attempts.append([])
        attempts[-1].append(event)
    for part in attempts:
        # A worker_lost error comes from the reconciler, after the attempt (and perhaps its
        # log) is gone: it ends the stream but continues no attempt's numbering.
        seqs = [e["seq"] for e in part if not _is_worker_lost(e)]
        report.seq_gaps += sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)
    text = "".join(e.get("text", "") for e in attempts[-1] if e["type"] == "token")
    if row["status"] == "completed" and text != row["output"]:
        report.text_mismatches += 1
        report.problems.append(f"{trace.id}: streamed {text[:40]!r} stored {row['output'][:40]!r}")


def cfg_max_attempts() -> int:
    from inferq.settings import Settings

    return Settings().max_attempts


def _is_worker_lost(event: dict[str, Any]) -> bool:
    return event["type"] == "error" and event.get("error", {}).get("code") == "worker_lost"


def check_outages(rec: Recorder, outages: list[Outage], report: Report) -> None:
    for outage in outages:
        statuses: dict[str, int] = {}
        worst = 0.0
        for started, seconds, status in rec.calls:
            if outage.start <= started <= outage.end and status not in (200, 202):
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                worst = max(worst, seconds)
                if outage.kind == "redis" and status != 503:
                    report.non_503_during_redis_outage += 1
        report.outage_statuses[outage.kind] = statuses
        report.outage_max_error_s[outage.kind] = round(worst, 2)


async def run_chaos(cfg: ChaosConfig) -> Report:
    cluster = Cluster(cfg)
    started = time.monotonic()
    try:
        await asyncio.to_thread(cluster.start)
        return await _drive(cluster, cfg, started)
    finally:
        await asyncio.to_thread(cluster.stop)


async def _drive(cluster: Cluster, cfg: ChaosConfig, started: float) -> Report:
    # Submit at about 80 % of what the workers can do, so chaos always meets work in flight.
    job_s = cfg.max_tokens * cfg.token_delay_s + 0.2
    gap_s = job_s / cfg.workers / 0.8
    span_s = cfg.jobs * gap_s
    rec, outages, reruns = Recorder(), [], []  # type: ignore[var-annotated]
    rng = random.Random(cfg.seed)
    ids: list[str] = []
    async with httpx.AsyncClient(
        base_url=cluster.base_url, timeout=10, headers=cluster.auth
    ) as http:

        async def client(n: int) -> JobTrace:
            await asyncio.sleep(n * gap_s)
            return await run_client(http, rec, cfg, n, ids)

        clients = [asyncio.create_task(client(n)) for n in range(cfg.jobs)]

        async def probe() -> None:
            """While a server is down: new submissions and polls, to see what clients get."""
            while True:
                n = len(clients)
                clients.append(asyncio.create_task(run_client(http, rec, cfg, n, ids)))
                for _ in range(4):
                    if ids:
                        await _request(http, rec, "GET", f"/v1/jobs/{rng.choice(ids)}")
                    await asyncio.sleep(0.25)

        chaos = asyncio.create_task(chaos_schedule(cluster, cfg, span_s, outages, reruns, probe))
        await chaos
        done, pending = await asyncio.wait(clients, timeout=cfg.deadline_s)
        for task in pending:
            task.cancel()
        await chaos
    traces = [t.result() for t in done]
    report = Report(jobs=len(clients), stuck=len(pending))
    db = await _connect(cluster.dsn)
    rows = {
        str(r["id"]): r
        for r in await db.fetch("SELECT id, status, output, attempts, error FROM jobs")
    }
    await db.close()
    for trace in traces:
        check_trace(trace, rows.get(str(trace.id)), report)
    check_outages(rec, outages, report)
    report.kills = len(reruns)
    report.rerun_s = [round(s, 2) for r in reruns for s in r.seconds]
    report.elapsed_s = round(time.monotonic() - started, 1)
    return report


def print_table(cfg: ChaosConfig, report: Report) -> None:
    rows = [
        ("jobs submitted (incl. during outages)", report.jobs),
        ("completed / failed", f"{report.completed} / {report.failed}"),
        ("failed other than worker_lost after max attempts", report.bad_failures),
        ("lost", report.lost),
        ("stuck", report.stuck),
        ("seq gaps within an attempt", report.seq_gaps),
        ("seq duplicates", report.seq_duplicates),
        ("stored text != last attempt's stream", report.text_mismatches),
        ("restart events seen by clients", report.restarts_seen),
        ("client reconnects", report.reconnects),
        ("worker kills (busy workers)", report.kills),
        ("jobs re-run after a kill", len(report.rerun_s)),
        ("kill -> re-run, max s", round(report.rerun_max_s, 2)),
        ("kill -> re-run, all s", " ".join(str(s) for s in sorted(report.rerun_s))),
        ("error statuses during outages", json.dumps(report.outage_statuses)),
        ("slowest error answer in outage, s", json.dumps(report.outage_max_error_s)),
        ("non-503 during Redis outage", report.non_503_during_redis_outage),
        ("elapsed s", report.elapsed_s),
        ("verdict", "PASS" if report.ok() else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    for problem in report.problems[:20]:
        print("problem:", problem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inferq chaos", description=__doc__.splitlines()[0])
    defaults = ChaosConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--json", help="also write the report here")
    args = vars(parser.parse_args(argv))
    out = args.pop("json")
    cfg = ChaosConfig(**args)
    report = asyncio.run(run_chaos(cfg))
    print_table(cfg, report)
    if out:
        Path(out).write_text(json.dumps({**asdict(report), "ok": report.ok()}, indent=2))
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
