"""`inferq up`: the API, a worker and Flower in the foreground; Ctrl-C stops them all."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from inferq.settings import Settings

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> None:
    # If `inferq up` itself is killed, the kernel takes its children down too.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setsid()


def children(settings: Settings, engine: str, model: str) -> list[Child]:
    inferq = [sys.executable, "-m", "inferq.cli.main"]
    return [
        Child("api", [*inferq, "api"]),
        Child("worker", [*inferq, "worker", "--engine", engine, "--model", model]),
        Child("flower", [*inferq, "flower"]),
    ]


def run_up(settings: Settings, engine: str, model: str) -> int:
    procs = children(settings, engine, model)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for child in procs:
        child.process = subprocess.Popen(child.argv, preexec_fn=_die_with_parent)
    _announce(settings)
    while not stopping and all(c.process and c.process.poll() is None for c in procs):
        time.sleep(0.2)
    for child in procs:
        if child.process and child.process.poll() is not None and not stopping:
            print(f"inferq up: {child.name} exited with {child.process.returncode}", flush=True)
    # The API drains its streams for shutdown_grace_s; the kill comes only after that.
    _stop_all(procs, settings.shutdown_grace_s + 5)
    return 0 if stopping else 1


def _announce(settings: Settings) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    dev_key = _dev_key(settings)
    print(
        "\ninferq is up:\n"
        f"  API     {api}   (docs: {api}/docs, ready: {api}/ready)\n"
        f"  Flower  http://127.0.0.1:{settings.flower_port}\n"
        f"{dev_key}"
        "Press Ctrl-C to stop everything.\n",
        flush=True,
    )


def _dev_key(settings: Settings) -> str:
    """The development tenant's key (created once, then reused), as lines to print."""
    from inferq.cli.keys import ensure_dev_key

    try:
        key = ensure_dev_key(settings)
    except Exception as exc:  # the stack is up either way; say why there is no key
        return f"  Key     (none: {type(exc).__name__}: {exc})\n"
    if key is None:
        return "  Key     create one with: inferq keys create --tenant NAME\n"
    return (
        f"  Key     {key}   (tenant dev; saved in {settings.dev_api_key_file})\n"
        f'          curl -H "Authorization: Bearer {key}" {settings.api_host}:'
        f"{settings.api_port}/v1/models\n"
    )


def _stop_all(procs: list[Child], grace_s: float) -> None:
    """SIGTERM every child, SIGKILL those still running after `grace_s`."""
    running = [c for c in procs if c.process and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
    print("inferq up: all stopped", flush=True)
