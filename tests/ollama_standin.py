"""A local stand-in for an Ollama server, speaking its documented HTTP API (docs/api.md).

Ollama cannot run on these machines, so the Ollama engine is tested against this. It follows
the documented wire format: `application/x-ndjson` streams of one JSON object per line, the
field names of /api/generate and /api/chat, durations in nanoseconds, `done_reason` on the
final object ("stop" or "length"), `{"error": "..."}` bodies with 404 for an unknown model,
503 when more requests arrive than it runs plus queues (Ollama's OLLAMA_MAX_QUEUE), and an
`{"error": ...}` line inside a 200 stream when generation fails after it started.

The "model" is deterministic text: a word stream chosen from the prompt (and the seed when
temperature > 0), so tests can assert exact outputs without weights.

Directives in the prompt drive the failure cases from outside (through a real inferq job):
`[[error-after:N]]` sends N tokens then an error line; `[[eos-after:N]]` ends the
generation (as an end-of-turn token would) after N tokens; `[[delay:S]]` sleeps S seconds per
token. They are a test device of this stand-in, not part of Ollama's API.

Run: `python -m tests.ollama_standin --port 11555 [--models a:latest,b:1b] [--parallel 1
--max-queue 0] [--token-delay 0.01]`. `GET /_standin/stats` reports what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

VERSION = "0.6.5"
NDJSON = "application/x-ndjson"
_WORDS = [
    "the",
    "sky",
    "is",
    "blue",
    "because",
    "light",
    "from",
    "the",
    "sun",
    "scatters",
    "off",
    "molecules",
    "in",
    "the",
    "air",
    "and",
    "shorter",
    "wavelengths",
    "scatter",
    "more",
    "so",
    "we",
    "see",
    "blue",
    "in",
    "every",
    "direction",
    "during",
    "the",
    "day",
]
_DIRECTIVE = re.compile(r"\[\[(error-after|eos-after|delay):([0-9.]+)\]\]")
_LOAD_NS = 1_500_000


@dataclass
class StandinState:
    models: list[str]
    parallel: int = 4
    max_queue: int = 16
    token_delay_s: float = 0.0
    running: int = 0
    waiting: int = 0
    slot: asyncio.Semaphore = field(init=False)
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "requests": 0,
            "completed": 0,
            "disconnected": 0,
            "errored": 0,
            "busy": 0,
            "active": 0,
        }
    )
    last_request: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slot = asyncio.Semaphore(self.parallel)

    def find(self, name: str) -> str | None:
        """Ollama's name rule: a missing tag means `latest`."""
        full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        return full if full in self.models else None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _not_found(name: str) -> JSONResponse:
    return _error(404, f"model '{name}' not found")


def tokenize(text: str) -> list[str]:
    """The stand-in's vocabulary: each word with its leading whitespace is one token."""
    return re.findall(r"\s*\S+", text) or [""]


def continuation(prompt: str, options: dict[str, Any]) -> list[str]:
    """Deterministic tokens for a prompt: greedy (temperature 0) depends on the prompt only."""
    digest = hashlib.sha256(prompt.encode()).digest()
    temperature = float(options.get("temperature", 0.8))
    seed = options.get("seed")
    if temperature > 0:
        rng = random.Random(seed if seed is not None else random.getrandbits(32))
    else:
        rng = random.Random(int.from_bytes(digest[:8], "big"))
    return [" " + rng.choice(_WORDS) for _ in range(4096)]


def _directives(prompt: str) -> dict[str, float]:
    return {key: float(value) for key, value in _DIRECTIVE.findall(prompt)}


def _final_fields(prompt_tokens: int, produced: int, started: int, reason: str) -> dict[str, Any]:
    total = time.monotonic_ns() - started
    prompt_ns = 2_000_000 + 50_000 * prompt_tokens
    return {
        "done": True,
        "done_reason": reason,
        "total_duration": total + _LOAD_NS,
        "load_duration": _LOAD_NS,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": produced,
        "eval_duration": max(total - prompt_ns, 1),
    }


async def _token_stream(
    state: StandinState, body: dict[str, Any], prompt: str, chat: bool
) -> AsyncIterator[bytes]:
    """The NDJSON lines of one generation; runs while holding a slot of the server."""
    options = body.get("options") or {}
    limit = int(options.get("num_predict", -1))
    directives = _directives(prompt)
    delay = directives.get("delay", state.token_delay_s)
    error_after = directives.get("error-after")
    eos_after = directives.get("eos-after")
    stops = [s for s in options.get("stop") or [] if s]
    started, produced, text = time.monotonic_ns(), 0, ""
    reason = "length"
    finished = False
    state.stats["active"] += 1
    try:
        for piece in continuation(prompt, options):
            if limit >= 0 and produced >= limit:
                break
            if eos_after is not None and produced >= eos_after:
                reason = "stop"
                break
            if error_after is not None and produced >= error_after:
                state.stats["errored"] += 1
                finished = True
                yield _line({"error": "an error was encountered while running the model"})
                return
            if delay:
                await asyncio.sleep(delay)
            if any(stop in text + piece for stop in stops):
                reason = "stop"
                break
            text += piece
            produced += 1
            yield _line(_chunk(body["model"], piece, chat, done=False))
        else:
            reason = "stop"
        final = _chunk(body["model"], "", chat, done=True)
        final.update(_final_fields(len(tokenize(prompt)), produced, started, reason))
        if not chat and not body.get("raw"):
            final["context"] = list(range(len(tokenize(prompt)) + produced))
        finished = True
        state.stats["completed"] += 1
        yield _line(final)
    finally:
        state.stats["active"] -= 1
        if not finished:
            state.stats["disconnected"] += 1


def _chunk(model: str, piece: str, chat: bool, done: bool) -> dict[str, Any]:
    head: dict[str, Any] = {"model": model, "created_at": _now()}
    if chat:
        head["message"] = {"role": "assistant", "content": piece}
    else:
        head["response"] = piece
    head["done"] = done
    return head


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def _admit(state: StandinState) -> bool:
    """Take a generation slot, or refuse at once when the queue is full (Ollama's 503)."""
    if state.running >= state.parallel and state.waiting >= state.max_queue:
        state.stats["busy"] += 1
        return False
    state.waiting += 1
    try:
        await state.slot.acquire()
    finally:
        state.waiting -= 1
    state.running += 1
    return True


def _release(state: StandinState) -> None:
    state.running -= 1
    state.slot.release()


async def _generate(state: StandinState, body: dict[str, Any], prompt: str, chat: bool) -> Any:
    if not await _admit(state):
        return _error(503, "server busy, please try again.  maximum pending requests exceeded")
    stream = _token_stream(state, body, prompt, chat)
    if body.get("stream", True) is False:
        try:
            return JSONResponse(await _collect(stream, chat))
        finally:
            _release(state)

    async def released() -> AsyncIterator[bytes]:
        try:
            async for line in stream:
                yield line
        finally:
            await stream.aclose()
            _release(state)

    return StreamingResponse(released(), media_type=NDJSON)


async def _collect(stream: AsyncIterator[bytes], chat: bool) -> dict[str, Any]:
    parts: list[str] = []
    last: dict[str, Any] = {}
    async for raw in stream:
        last = json.loads(raw)
        if "error" in last:
            return last
        parts.append(last["message"]["content"] if chat else last["response"])
    if chat:
        last["message"] = {"role": "assistant", "content": "".join(parts)}
    else:
        last["response"] = "".join(parts)
    return last


def _render_chat(messages: list[dict[str, Any]]) -> str:
    turns = [f"<|{m.get('role', 'user')}|>\n{m.get('content', '')}\n" for m in messages]
    return "".join(turns) + "<|assistant|>\n"


def create_app(state: StandinState) -> FastAPI:  # noqa: C901  (one closure per endpoint)
    app = FastAPI()

    async def read_body(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            return _error(400, str(exc))
        if not isinstance(body, dict):
            return _error(400, "invalid request body")
        state.stats["requests"] += 1
        state.last_request = body
        return body

    @app.get("/")
    async def root() -> Any:
        return JSONResponse("Ollama is running")

    @app.get("/api/version")
    async def version() -> Any:
        return {"version": VERSION}

    @app.get("/api/tags")
    async def tags() -> Any:
        return {"models": [_model_entry(name) for name in state.models]}

    @app.post("/api/show")
    async def show(request: Request) -> Any:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        name = body.get("model") or body.get("name") or ""
        if state.find(name) is None:
            return _not_found(name)
        return _show_entry(name)

    @app.post("/api/generate")
    async def generate(request: Request) -> Any:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not body.get("model"):
            return _error(400, "model is required")
        if state.find(body["model"]) is None:
            return _error(404, f"model '{body['model']}' not found, try pulling it first")
        if body.get("raw") and (body.get("template") or body.get("system")):
            return _error(400, "raw mode does not support template, system, or context")
        prompt = body.get("prompt") or ""
        if not prompt:  # documented: an empty prompt just loads the model
            return JSONResponse({**_chunk(body["model"], "", False, True), "done_reason": "load"})
        return await _generate(state, body, prompt, chat=False)

    @app.post("/api/chat")
    async def chat(request: Request) -> Any:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not body.get("model"):
            return _error(400, "model is required")
        if state.find(body["model"]) is None:
            return _error(404, f"model '{body['model']}' not found, try pulling it first")
        messages = body.get("messages") or []
        if not messages:
            return JSONResponse({**_chunk(body["model"], "", True, True), "done_reason": "load"})
        return await _generate(state, body, _render_chat(messages), chat=True)

    @app.get("/_standin/stats")
    async def stats() -> Any:
        return {**state.stats, "last_request": state.last_request}

    return app


def _details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "gemma3",
        "families": ["gemma3"],
        "parameter_size": "268.10M",
        "quantization_level": "Q4_K_M",
    }


def _model_entry(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-08-14T10:00:00.000000000Z",
        "size": 253_000_000,
        "digest": digest,
        "details": _details(),
    }


def _show_entry(name: str) -> dict[str, Any]:
    return {
        "modelfile": f'# Modelfile generated by "ollama show"\nFROM {name}\n',
        "parameters": 'stop                           "<end_of_turn>"',
        "template": "{{ .Prompt }}",
        "details": _details(),
        "model_info": {
            "general.architecture": "gemma3",
            "general.parameter_count": 268_098_176,
            "gemma3.context_length": 32768,
        },
        "capabilities": ["completion"],
        "modified_at": "2025-08-14T10:00:00.000000000Z",
    }


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A stand-in Ollama server for tests.")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--models", default="gemma3:270m,tinyllama:latest")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    state = StandinState(
        models=args.models.split(","),
        parallel=args.parallel,
        max_queue=args.max_queue,
        token_delay_s=args.token_delay,
    )
    uvicorn.run(create_app(state), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
