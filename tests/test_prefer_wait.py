"""`Prefer: wait=N` on POST /v1/jobs: the whole job in one request when it ends in time."""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx
import pytest

from tests.conftest import AUTH, read_sse, submit, wait_final

LONG = " ".join(f"w{i}" for i in range(200))  # the echo worker's 30 ms a token: 6 s


def _body(prompt: str, max_tokens: int, cache: str = "off") -> dict[str, object]:
    return {"model": "echo", "prompt": prompt, "max_tokens": max_tokens, "cache": {"mode": cache}}


async def test_a_job_that_ends_in_time_comes_back_whole(client: httpx.AsyncClient) -> None:
    prompt = f"wait for me {uuid.uuid4().hex[:6]}"
    response = await client.post("/v1/jobs", json=_body(prompt, 4), headers={"Prefer": "wait=30"})
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=30"
    job = response.json()
    assert job["status"] == "completed" and job["finish_reason"] == "length"
    assert job["output"] == " ".join(prompt.split()[:4])
    assert job["usage"]["completion_tokens"] == 4
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert job == (await client.get(f"/v1/jobs/{job['id']}")).json()  # the stored record


async def test_a_cache_hit_is_one_request(client: httpx.AsyncClient) -> None:
    prompt = f"hit me once {uuid.uuid4().hex[:6]}"
    wait = {"Prefer": "wait"}
    first = await client.post("/v1/jobs", json=_body(prompt, 3, "exact"), headers=wait)
    assert first.status_code == 200 and first.headers["x-inferq-cache"] == "miss"
    assert first.headers["preference-applied"] == "wait=60"
    await wait_final(client, first.json()["id"])
    for _ in range(100):  # the fill is written as the job ends: give it a moment
        hit = await client.post(
            "/v1/jobs", json=_body(prompt, 3, "exact"), headers={"Prefer": "wait=5"}
        )
        if hit.headers["x-inferq-cache"] == "hit-exact":
            break
    assert hit.status_code == 200 and hit.headers["x-inferq-cache"] == "hit-exact"
    job = hit.json()
    assert job["id"] != first.json()["id"] and job["cache"] == "hit-exact"
    assert job["output"] == first.json()["output"] and job["status"] == "completed"


async def test_a_job_still_running_at_the_deadline_is_a_202_that_goes_on(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await client.post("/v1/jobs", json=_body(LONG, 200), headers={"Prefer": "wait=1"})
    waited = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert 1.0 <= waited < 4.0
    job = response.json()
    assert job["status"] in ("queued", "running") and job["finish_reason"] is None
    assert response.headers["preference-applied"] == "wait=1"
    events = await read_sse(client, job["id"], stop_after=2)  # it is still being generated
    assert [e["type"] for e in events] == ["token", "token"]
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200


async def test_without_wait_the_answer_is_the_plain_202(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", json=_body("plain", 2), headers={"Prefer": "respond-async, handling=lenient"}
    )
    assert response.status_code == 202
    assert "preference-applied" not in response.headers
    assert set(response.json()) == {"id", "object", "status", "model", "created_at", "links"}


@pytest.mark.parametrize("value", ["wait=0", "wait=61", "wait=abc", "wait=-1", "wait=1.5",
                                   "wait=0600", "wait=" + "9" * 5000])  # fmt: skip
async def test_a_wait_it_cannot_honour_is_a_400_that_submits_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    rid = f"badwait-{uuid.uuid4().hex[:12]}"
    response = await client.post(
        "/v1/jobs", json=_body("x", 2), headers={"Prefer": value, "X-Request-ID": rid}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_prefer_wait" and error["param"] == "Prefer"
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE request_id = $1", rid) == 0


async def test_a_client_that_leaves_mid_wait_leaves_its_job_running(
    stack: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The job was accepted before the wait: a REST client's going is not a cancel."""
    rid = f"leftwait-{uuid.uuid4().hex[:12]}"
    headers = {**AUTH, "Prefer": "wait=30", "X-Request-ID": rid}
    async with httpx.AsyncClient(base_url=stack, timeout=0.8, headers=headers) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("/v1/jobs", json=_body(LONG, 60))
    job_id = await db.fetchval("SELECT id FROM jobs WHERE request_id = $1", rid)
    job = await wait_final(client, str(job_id), timeout=30)
    assert job["status"] == "completed" and job["usage"]["completion_tokens"] == 60


async def test_a_poll_with_wait_answers_once_the_job_has_ended(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt="long poll " * 10, max_tokens=20)
    waited = await client.get(f"/v1/jobs/{accepted['id']}", headers={"Prefer": "wait=30"})
    assert waited.status_code == 200 and waited.headers["preference-applied"] == "wait=30"
    job = waited.json()
    assert job["status"] == "completed" and job["usage"]["completion_tokens"] == 20
    assert job["output"] == " ".join(("long poll " * 10).split()[:20])


async def test_a_poll_with_wait_answers_at_the_deadline_while_the_job_runs(
    client: httpx.AsyncClient,
) -> None:
    accepted = await submit(client, model="echo", prompt=LONG, max_tokens=200)
    started = time.monotonic()
    waited = await client.get(f"/v1/jobs/{accepted['id']}", headers={"Prefer": "wait=1"})
    assert 1.0 <= time.monotonic() - started < 4.0
    assert waited.status_code == 200 and waited.json()["status"] in ("queued", "running")
    bad = await client.get(f"/v1/jobs/{accepted['id']}", headers={"Prefer": "wait=99"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_prefer_wait"
    assert (await client.post(f"/v1/jobs/{accepted['id']}/cancel")).status_code == 200
