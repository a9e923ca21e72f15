"""The targets a scenario drives: inferq (REST job + SSE, OpenAI surface, WebSocket), an
OpenAI-compatible peer (llama-cpp-python's server, the LiteLLM proxy), and the floor:
llama-cpp-python in this process.

Every target answers `stream` (time to first token, tokens, end to end) and `once` (a whole
answer in one request, as a cache hit is usually fetched). Greedy decoding (temperature 0)
everywhere, so every target produces the same tokens for the same prompt; a per-request seed
keeps caches out of runs that measure generation (the seed is part of every cache key).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
from websockets.typing import Subprotocol

from inferq.bench.lean_http import LeanClient, LeanResponse
from inferq.bench.stats import Sample
from inferq.tokenizers import llama_encode


class Target(Protocol):
    name: str

    async def available(self) -> str | None:
        """None when the target answers; otherwise why it is skipped."""

    async def stream(self, prompt: str, max_tokens: int, seed: int) -> Sample: ...

    async def once(self, prompt: str, max_tokens: int, seed: int) -> Sample: ...


# httpx everywhere, but the copies of the targets that `cache` and `capacity` drive use the
# lean client (its docstring).
HttpClient = httpx.AsyncClient | LeanClient


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def failed(exc: BaseException, started: float) -> Sample:
    return Sample(ok=False, status=type(exc).__name__, e2e_ms=_ms(started))


async def probe(client: HttpClient, path: str) -> str | None:
    try:
        response = await client.get(path)
    except httpx.HTTPError as exc:
        return f"{client.base_url}{path}: {type(exc).__name__} ({exc})"
    if response.status_code != 200:
        return f"{client.base_url}{path}: HTTP {response.status_code}"
    return None


class InferqJobs:
    """POST /v1/jobs, then GET /v1/jobs/{id}/events (SSE) to the `end` event."""

    def __init__(self, client: HttpClient, model: str, cache_mode: str = "off"):
        self.client = client
        self.model = model
        self.cache_mode = cache_mode
        self.name = "inferq-jobs"

    async def available(self) -> str | None:
        return await probe(self.client, "/v1/models")

    def body(self, prompt: str, max_tokens: int, seed: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": seed,
            "cache": {"mode": self.cache_mode},
        }

    async def stream(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        started = time.perf_counter()
        try:
            response = await self.client.post("/v1/jobs", json=self.body(prompt, max_tokens, seed))
            if response.status_code != 202:
                return Sample(ok=False, status=str(response.status_code), e2e_ms=_ms(started))
            sample = await self._events(response.json()["id"], started)
            sample.cache = cache_marker(response.headers)
            return sample
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return failed(exc, started)

    once = stream  # a job's answer always arrives as its event stream

    async def waited(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        """The whole job in the submit's answer (`Prefer: wait`): one request, no stream."""
        started = time.perf_counter()
        try:
            response = await self.client.post(
                "/v1/jobs", json=self.body(prompt, max_tokens, seed), headers=_WAIT
            )
            if response.status_code != 200:
                return Sample(ok=False, status=str(response.status_code), e2e_ms=_ms(started))
            job = response.json()
            if job["status"] != "completed":
                return Sample(ok=False, status=f"job_{job['status']}", e2e_ms=_ms(started))
            tokens = int((job.get("usage") or {}).get("completion_tokens", 0))
            sample = Sample(ok=True, status="200", e2e_ms=_ms(started), tokens=tokens)
            sample.cache = cache_marker(response.headers)
            return sample
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return failed(exc, started)

    async def _events(self, job_id: str, started: float) -> Sample:
        ttft: float | None = None
        count, kind = 0, ""
        async with self.client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            if response.status_code != 200:
                return Sample(ok=False, status=str(response.status_code), e2e_ms=_ms(started))
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "token":
                        ttft = _ms(started) if ttft is None else ttft
                        count += 1
                elif line.startswith("data: ") and kind in ("end", "error"):
                    return _final(json.loads(line[6:]), kind, started, ttft, count)
        return Sample(ok=False, status="stream_cut", e2e_ms=_ms(started), ttft_ms=ttft)


_WAIT = {"Prefer": "wait=60"}


def _final(
    event: dict[str, Any], kind: str, started: float, ttft: float | None, count: int
) -> Sample:
    e2e = _ms(started)
    if kind == "error":
        code = (event.get("error") or {}).get("code", "error")
        return Sample(ok=False, status=f"job_{code}", e2e_ms=e2e, ttft_ms=ttft)
    tokens = int((event.get("usage") or {}).get("completion_tokens", count))
    return Sample(ok=True, status="200", e2e_ms=e2e, ttft_ms=ttft, tokens=tokens)


class OpenAICompletions:
    """POST /v1/completions (streaming or not) on any OpenAI-compatible server."""

    def __init__(self, name: str, client: HttpClient, model: str):
        self.name = name
        self.client = client
        self.model = model

    async def available(self) -> str | None:
        return await probe(self.client, "/v1/models")

    def body(self, prompt: str, max_tokens: int, seed: int, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": seed,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def stream(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        started = time.perf_counter()
        body = self.body(prompt, max_tokens, seed, stream=True)
        try:
            async with self.client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    return Sample(ok=False, status=str(response.status_code), e2e_ms=_ms(started))
                return await _chunks(response, started)
        except (httpx.HTTPError, ValueError) as exc:
            return failed(exc, started)

    async def once(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        started = time.perf_counter()
        body = self.body(prompt, max_tokens, seed, stream=False)
        try:
            response = await self.client.post("/v1/completions", json=body)
            e2e = _ms(started)
            if response.status_code != 200:
                return Sample(ok=False, status=str(response.status_code), e2e_ms=e2e)
            usage = response.json().get("usage") or {}
        except (httpx.HTTPError, ValueError) as exc:
            return failed(exc, started)
        tokens = int(usage.get("completion_tokens", 0))
        cache = cache_marker(response.headers)
        return Sample(ok=True, status="200", e2e_ms=e2e, ttft_ms=e2e, tokens=tokens, cache=cache)


def cache_marker(headers: httpx.Headers) -> str | None:
    """inferq's x-inferq-cache; LiteLLM marks a hit with x-litellm-cache-key."""
    if "x-inferq-cache" in headers:
        return headers["x-inferq-cache"].split(";")[0]
    if headers.get("x-litellm-cache-key"):
        return "hit"
    return None


async def _chunks(response: httpx.Response | LeanResponse, started: float) -> Sample:
    ttft: float | None = None
    count, usage = 0, None
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            tokens = int(usage["completion_tokens"]) if usage else count
            return Sample(ok=True, status="200", e2e_ms=_ms(started), ttft_ms=ttft, tokens=tokens)
        chunk = json.loads(line[6:])
        if "error" in chunk:
            code = chunk["error"].get("code") or "stream_error"
            return Sample(ok=False, status=str(code), e2e_ms=_ms(started), ttft_ms=ttft)
        usage = chunk.get("usage") or usage
        if any(choice.get("text") for choice in chunk.get("choices") or []):
            ttft = _ms(started) if ttft is None else ttft
            count += 1
    return Sample(ok=False, status="stream_cut", e2e_ms=_ms(started), ttft_ms=ttft)


class InferqWebSocket:
    """/v1/ws: one socket per request, `stream_chat` → `stream_token`... `stream_end`.

    Timed from sending `stream_chat` (the handshake is not part of a chat turn)."""

    def __init__(self, url: str, model: str, api_key: str | None = None):
        self.name = "inferq-ws"
        self.url = url
        self.model = model
        # A browser cannot set headers on a WebSocket: the key rides as a subprotocol.
        offered = ["inferq.v1"] + ([f"bearer.{api_key}"] if api_key else [])
        self.subprotocols = [Subprotocol(p) for p in offered]

    async def available(self) -> str | None:
        import websockets

        try:
            async with websockets.connect(self.url, subprotocols=self.subprotocols):
                return None
        except (OSError, websockets.WebSocketException) as exc:
            return f"{self.url}: {type(exc).__name__} ({exc})"

    async def stream(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        import websockets

        data = {
            "prompt": prompt,
            "model": self.model,
            "params": {"max_tokens": max_tokens, "temperature": 0.0, "seed": seed},
        }
        started = time.perf_counter()
        try:
            async with websockets.connect(self.url, subprotocols=self.subprotocols) as ws:
                started = time.perf_counter()
                await ws.send(json.dumps({"event": "stream_chat", "data": data}))
                return await _ws_events(ws, started)
        except (OSError, websockets.WebSocketException, ValueError) as exc:
            return failed(exc, started)

    once = stream


async def _ws_events(ws: Any, started: float) -> Sample:
    ttft: float | None = None
    count = 0
    async for raw in ws:
        message = json.loads(raw)
        event, data = message.get("event"), message.get("data") or {}
        if event == "stream_token":
            ttft = _ms(started) if ttft is None else ttft
            count += 1
        elif event == "stream_end":
            tokens = int((data.get("usage") or {}).get("completion_tokens", count))
            return Sample(
                ok=True,
                status="200",
                e2e_ms=_ms(started),
                ttft_ms=ttft,
                tokens=tokens,
                cache=data.get("cache"),
            )
        elif event == "error":
            return Sample(ok=False, status=str(data.get("code")), e2e_ms=_ms(started))
    return Sample(ok=False, status="socket_closed", e2e_ms=_ms(started), ttft_ms=ttft)


class InProcessFloor:
    """llama-cpp-python in this process, one request at a time: what any server adds to."""

    def __init__(self, model_path: Path, n_threads: int | None, n_ctx: int = 2048):
        self.name = "floor"
        self.model_path = model_path
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._llm: Any = None
        self._lock = asyncio.Lock()

    async def available(self) -> str | None:
        if not self.model_path.is_file():
            return f"no GGUF at {self.model_path}"
        if self._llm is None:
            from llama_cpp import Llama

            self._llm = await asyncio.to_thread(
                Llama,
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                verbose=False,
            )
        return None

    async def stream(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        async with self._lock:  # one Llama, one sequence: never two calls at once
            return await asyncio.to_thread(self._generate, prompt, max_tokens, seed)

    once = stream

    def _generate(self, prompt: str, max_tokens: int, seed: int) -> Sample:
        llm = self._llm
        tokens = llama_encode(llm, prompt)  # as the worker tokenizes
        llm.reset()  # no prefix reuse from the previous prompt: every target evaluates it whole
        llm.set_seed(seed)
        started = time.perf_counter()
        ttft: float | None = None
        count = 0
        for token in llm.generate(tokens, temp=0.0):
            if token == llm.token_eos():
                break
            ttft = _ms(started) if ttft is None else ttft
            count += 1
            if count >= max_tokens:
                break
        return Sample(ok=True, status="200", e2e_ms=_ms(started), ttft_ms=ttft, tokens=count)
