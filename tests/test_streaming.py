"""Token events over SSE: order, late readers, reconnects (echo engine: fast, deterministic)."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import read_sse, submit, wait_final

WORDS = " ".join(f"w{i}" for i in range(40))


def texts(events: list[dict[str, object]]) -> str:
    return "".join(str(e["text"]) for e in events if e["type"] == "token")


async def test_echo_stream_is_ordered_and_complete(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt="a b c", max_tokens=5)
    events = await read_sse(client, accepted["id"])
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4, 5]
    assert texts(events) == "a b c a b"
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


async def test_reader_joining_half_way_gets_everything(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt=WORDS, max_tokens=40)
    async with asyncio.timeout(30):
        while not (await client.get(f"/v1/jobs/{accepted['id']}")).json()["output"]:
            await asyncio.sleep(0.02)
    late = await read_sse(client, accepted["id"])
    job = await wait_final(client, accepted["id"])
    assert [e["seq"] for e in late] == list(range(41))
    assert texts(late) == job["output"] == WORDS


async def test_reconnect_with_last_event_id_resumes_without_gap(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt=WORDS, max_tokens=40)
    head = await read_sse(client, accepted["id"], stop_after=7)
    tail = await read_sse(client, accepted["id"], last_event_id=head[-1]["seq"])
    seqs = [e["seq"] for e in head + tail]
    assert seqs == list(range(41)), "no gap, no duplicate"
    assert texts(head + tail) == WORDS


async def test_stream_of_finished_job_replays_all(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt="x y", max_tokens=3)
    await wait_final(client, accepted["id"])
    events = await read_sse(client, accepted["id"])
    assert texts(events) == "x y x" and events[-1]["type"] == "end"
    after_end = await read_sse(client, accepted["id"], last_event_id=1)
    assert [e["seq"] for e in after_end] == [2, 3]


async def test_end_of_turn_stops_with_stop_reason(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt="one two <end> three", max_tokens=10)
    job = await wait_final(client, accepted["id"])
    assert job["output"] == "one two" and job["finish_reason"] == "stop"
    assert job["usage"]["completion_tokens"] == 2


async def test_stop_string_across_tokens(client: httpx.AsyncClient) -> None:
    accepted = await submit(
        client, model="echo", prompt="alpha beta gamma delta", max_tokens=10, stop=["a gam"]
    )
    events = await read_sse(client, accepted["id"])
    job = await wait_final(client, accepted["id"])
    assert job["output"] == "alpha bet" == texts(events)
    assert job["finish_reason"] == "stop"


async def test_many_concurrent_readers_see_the_same_stream(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, model="echo", prompt=WORDS, max_tokens=20)
    streams = await asyncio.gather(*(read_sse(client, accepted["id"]) for _ in range(10)))
    assert all(s == streams[0] for s in streams)
    assert len(streams[0]) == 21
