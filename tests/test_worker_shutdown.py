"""A worker asked to stop (SIGTERM) takes no new job and finishes the one it is running.

A worker that does not stop in time is killed by its supervisor (`inferq up` after 15 s,
compose's stop_grace_period); its jobs then run again elsewhere through the lease reconciler,
which tests/test_chaos_small.py and tests/test_leases.py prove.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import redis

from tests.conftest import API_PORT, AUTH
from tests.stack import Proc, inferq_argv, wait_http, wait_workers

PORT = API_PORT + 6
REDIS_URL = os.environ.get("INFERQ_TEST_SHUTDOWN_REDIS_URL", "redis://127.0.0.1:6379/13")
WORDS = " ".join(f"g{i}" for i in range(60))


def test_sigterm_lets_the_running_job_finish(stack: str) -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {"INFERQ_REDIS_URL": REDIS_URL, "INFERQ_API_PORT": str(PORT),
           "INFERQ_EMBEDDINGS_ENABLED": "false", "INFERQ_ECHO_TOKEN_DELAY_S": "0.03",
           "INFERQ_WORKER_METRICS_PORT": "0"}  # fmt: skip
    worker = Proc(
        "worker-shutdown", inferq_argv("worker", "--engine", "echo", "--model", "echo"), env
    )
    api = Proc("api-shutdown-worker", inferq_argv("api"), env)
    base = f"http://127.0.0.1:{PORT}"
    try:
        wait_workers(REDIS_URL, {"echo"})
        wait_http(f"{base}/health", api)
        body = {"model": "echo", "prompt": WORDS, "max_tokens": 60, "cache": {"mode": "off"}}
        job_id = httpx.post(f"{base}/v1/jobs", json=body, headers=AUTH).json()["id"]
        deadline = time.monotonic() + 30
        while not httpx.get(f"{base}/v1/jobs/{job_id}", headers=AUTH).json()["output"]:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=AUTH).json()
    finally:
        api.stop()
        worker.stop()
    assert job["status"] == "completed" and job["output"] == WORDS
    assert job["attempts"] == 1, "finished by the worker that started it, not run again"
