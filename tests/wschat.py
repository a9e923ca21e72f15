"""Helpers for WebSocket chat tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _connect

from tests.conftest import AUTH


def connect(url: str, **kwargs: Any) -> _connect:
    """websockets' connect, authenticated as the tests' tenant unless headers are given."""
    kwargs.setdefault("additional_headers", AUTH)
    return _connect(url, **kwargs)


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/v1/ws"


async def send(ws: ClientConnection, event: str, data: dict[str, Any] | None = None) -> None:
    await ws.send(json.dumps({"event": event, "data": data or {}}))


async def recv(ws: ClientConnection, timeout: float = 30) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def until_end(
    ws: ClientConnection, job_id: str | None = None, timeout: float = 60
) -> list[dict[str, Any]]:
    """Frames up to and including the stream_end (or error) of `job_id` (any job if None)."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            frames.append(frame)
            ended = frame["event"] in ("stream_end", "error")
            if ended and (job_id is None or frame["data"].get("job_id") in (job_id, None)):
                return frames


async def chat(
    ws: ClientConnection, prompt: str, timeout: float = 60, **data: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send one stream_chat; return its stream_start and every frame to its end."""
    await send(ws, "stream_chat", {"prompt": prompt, **data})
    start = await recv(ws, timeout)
    assert start["event"] == "stream_start", start
    return start["data"], await until_end(ws, start["data"]["job_id"], timeout)


def tokens_of(frames: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [
        f["data"] for f in frames if f["event"] == "stream_token" and f["data"]["job_id"] == job_id
    ]


def text_of(frames: list[dict[str, Any]], job_id: str) -> str:
    return "".join(t["token"] for t in tokens_of(frames, job_id))
