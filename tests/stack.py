"""Real processes for system tests: the API under uvicorn and Celery workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from inferq.queue.names import WORKER_KEY_PATTERN

LOG_DIR = Path(os.environ.get("INFERQ_TEST_LOG_DIR", "/tmp/inferq-test-logs"))


class Proc:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def inferq_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "inferq.cli.main", *args]


def start_api(port: int, name: str = "api") -> Proc:
    proc = Proc(name, inferq_argv("api"), {"INFERQ_API_PORT": str(port)})
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def start_worker(engine: str, model: str, env: dict[str, str] | None = None) -> Proc:
    return Proc(
        f"worker-{engine}", inferq_argv("worker", "--engine", engine, "--model", model), env or {}
    )


def wait_http(url: str, proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log_path}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer; see {proc.log_path}")


def wait_workers(redis_url: str, models: set[str], timeout: float = 120) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = list(client.scan_iter(match=WORKER_KEY_PATTERN))
        live = {json.loads(v)["model"] for v in client.mget(keys) if v} if keys else set()
        if models <= live:
            return
        time.sleep(0.2)
    raise TimeoutError(f"workers for {models} did not come up")
