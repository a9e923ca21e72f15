"""Flower, started as `make up` starts it, sees the worker and a finished inference task."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import API_PORT, submit, wait_final
from tests.stack import Proc, inferq_argv, wait_http

FLOWER_PORT = API_PORT + 2
AUTH = ("ops", "flower-test-secret")


@pytest.fixture(scope="module")
def flower(stack: str) -> Iterator[str]:
    env = {"INFERQ_FLOWER_PORT": str(FLOWER_PORT), "INFERQ_FLOWER_BASIC_AUTH": ":".join(AUTH)}
    proc = Proc("flower", inferq_argv("flower"), env)
    base = f"http://127.0.0.1:{FLOWER_PORT}"
    try:
        wait_http(f"{base}/healthcheck", proc)
        yield base
    finally:
        proc.stop()


async def test_flower_sees_worker_and_finished_task(client: httpx.AsyncClient, flower: str) -> None:
    async with httpx.AsyncClient(base_url=flower, timeout=10, auth=AUTH) as api:
        assert (await api.get("/api/workers", auth=("ops", "wrong"))).status_code == 401
        async with asyncio.timeout(60):
            # Flower learns of tasks from events: submit once it is listening to the workers.
            while not any(name.startswith("echo.echo@") for name in await _workers(api)):
                await asyncio.sleep(0.5)
            accepted = await submit(client, model="echo", prompt="flower check", max_tokens=2)
            await wait_final(client, accepted["id"])
            while (task := (await api.get("/api/tasks")).json().get(accepted["id"])) is None or (
                task.get("state") != "SUCCESS"
            ):
                await asyncio.sleep(0.5)
    assert task["name"] == "inferq.run_job"
    assert task["uuid"] == accepted["id"]


async def _workers(api: httpx.AsyncClient) -> dict[str, object]:
    workers: dict[str, object] = (await api.get("/api/workers", params={"refresh": "1"})).json()
    return workers
