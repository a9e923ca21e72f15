"""Whether an HTTP client is still there, for handlers that wait on something else."""

from __future__ import annotations

from fastapi import Request


async def disconnected(request: Request) -> None:
    """Return when the client has closed its connection (its body already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue
