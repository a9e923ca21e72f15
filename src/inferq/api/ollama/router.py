"""Ollama-compatible HTTP surface. Streams are NDJSON (one JSON object per line) by default;
errors are `{"error": "..."}` with Ollama's status codes, in and out of streams."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from inferq import __version__
from inferq.api import job_service
from inferq.api.deps import SessionDep, StateDep
from inferq.api.ollama import service
from inferq.api.ollama.schemas import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingsRequest,
    ShowRequest,
)
from inferq.api.openai.jobrun import collect, guard_stream, submit_choices, unless_disconnected
from inferq.api.openai.requests import parse_request, read_json_object
from inferq.api.openai.router import get_embedder, job_headers
from inferq.api.openai.streaming import relay
from inferq.api.openapi_bodies import json_body
from inferq.api.schemas import JobCreate
from inferq.api.state import AppState
from inferq.db.models import Job
from inferq.embeddings import MAX_TOKENS, check_input_count, is_embedding_model
from inferq.errors import InferqError, InvalidRequest, ServiceUnavailable


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class OllamaRoute(APIRoute):
    """Errors leave this router in Ollama's shape, not OpenAI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def ollama_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except InferqError as exc:
                return _error(exc.message, exc.status_code)
            except RequestValidationError as exc:
                return _error(str(exc.errors()[0].get("msg", "invalid request")), 400)

        return ollama_handler


router = APIRouter(prefix="/api", tags=["ollama"], route_class=OllamaRoute)


class NdjsonFrames:
    """One line per token, then the final line with `done`, the reason and the durations."""

    def __init__(self, model: str, chat: bool):
        self._model, self._chat = model, chat

    def _line(self, text: str, done: bool) -> dict[str, Any]:
        line: dict[str, Any] = {"model": self._model, "created_at": service.now_rfc3339()}
        if self._chat:
            line["message"] = {"role": "assistant", "content": text}
        else:
            line["response"] = text
        line["done"] = done
        return line

    def opening(self, index: int) -> bytes | None:
        return None

    def token(self, index: int, text: str) -> bytes:
        return service.ndjson(self._line(text, False))

    def final(self, end: dict[str, Any], text: str = "") -> dict[str, Any]:
        line = self._line(text, True)
        line["done_reason"] = service.done_reason(end)
        line.update(service.durations(end))
        return line

    def finish(self, index: int, end: dict[str, Any]) -> bytes | None:
        return service.ndjson(self.final(end))

    def error(self, exc: InferqError) -> bytes:
        return service.ndjson({"error": exc.message})

    def closing(self) -> bytes | None:
        return None


async def _run(
    request: Request,
    state: AppState,
    jobs: list[Job],
    frames: NdjsonFrames,
    stream: bool,
) -> Response:
    headers = job_headers(jobs)
    if stream:
        lines = guard_stream(state, jobs, relay(state, jobs, frames))
        return StreamingResponse(lines, media_type="application/x-ndjson", headers=headers)
    try:
        results = await unless_disconnected(request, jobs, state, collect(state, jobs))
    except InferqError as exc:
        return _error(exc.message, exc.status_code, headers)
    if results is None:
        return Response(status_code=499, headers=headers)
    result = results[0]
    return JSONResponse(frames.final(result.end or {}, result.text), headers=headers)


def _loaded(model: str, chat: bool) -> JSONResponse:
    """Ollama answers an empty request by loading the model; inferq's workers keep it loaded."""
    line = NdjsonFrames(model, chat).final({})
    for key in list(line):
        if key.endswith(("_duration", "_count")):
            del line[key]
    line["done_reason"] = "load"
    return JSONResponse(line)


@router.post("/chat", openapi_extra=json_body(ChatRequest))
async def chat(request: Request, state: StateDep, session: SessionDep) -> Response:
    req = parse_request(ChatRequest, await read_json_object(request), request.url.path)
    if not req.messages:
        service.spec_of(state, req.model)
        return _loaded(req.model, chat=True)
    body, grammar, fill = service.chat_job(state, req)
    frames = NdjsonFrames(req.model, chat=True)
    return await _submit(request, state, session, body, grammar, fill, frames, req.stream)


@router.post("/generate", openapi_extra=json_body(GenerateRequest))
async def generate(request: Request, state: StateDep, session: SessionDep) -> Response:
    req = parse_request(GenerateRequest, await read_json_object(request), request.url.path)
    if not req.prompt:
        service.spec_of(state, req.model)
        return _loaded(req.model, chat=False)
    body, grammar, fill = service.generate_job(state, req)
    frames = NdjsonFrames(req.model, chat=False)
    return await _submit(request, state, session, body, grammar, fill, frames, req.stream)


async def _submit(
    request: Request,
    state: AppState,
    session: AsyncSession,
    body: JobCreate,
    grammar: str | None,
    fill: bool,
    frames: NdjsonFrames,
    stream: bool,
) -> Response:
    """One job for a chat or generate request, answered as NDJSON or one JSON object."""
    options = job_service.SubmitOptions(
        grammar=grammar, fill_context=fill, cache_control=request.headers.get("cache-control")
    )
    jobs = await submit_choices(state, session, body, 1, options)
    return await _run(request, state, jobs, frames, stream)


@router.get("/tags")
async def tags(state: StateDep) -> dict[str, Any]:
    return {"models": [service.tag_entry(spec) for spec in service.installed_models(state)]}


@router.get("/ps")
async def ps(state: StateDep) -> dict[str, Any]:
    return {"models": await service.running(state)}


@router.post("/show", openapi_extra=json_body(ShowRequest))
async def show(request: Request, state: StateDep) -> dict[str, Any]:
    req = parse_request(ShowRequest, await read_json_object(request), request.url.path)
    name = req.model or req.name
    if not name:
        raise InvalidRequest("model is required", param="model")
    return service.show(service.spec_of(state, name))


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


async def _embed(request: Request, model: str, texts: list[str], truncate: bool) -> Any:
    if not is_embedding_model(model):
        service.spec_of(request.app.state.inferq, model)  # 404 when it is not a model at all
        raise InvalidRequest(f'"{model}" does not support embeddings', param="model")
    check_input_count(texts)
    embedder = get_embedder(request)
    if embedder is None:
        raise ServiceUnavailable("embeddings are disabled on this server")
    counts = await embedder.count_tokens(texts)
    if not truncate and any(count > MAX_TOKENS for count in counts):
        raise InvalidRequest("input length exceeds maximum context length", param="input")
    return await embedder.embed(texts), counts


@router.post("/embed", openapi_extra=json_body(EmbedRequest))
async def embed(request: Request) -> dict[str, Any]:
    started = time.perf_counter()
    req = parse_request(EmbedRequest, await read_json_object(request), request.url.path)
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        return {"model": req.model, "embeddings": []}
    vectors, counts = await _embed(request, req.model, texts, req.truncate)
    return {
        "model": req.model,
        "embeddings": [[float(x) for x in row] for row in vectors],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": sum(min(c, MAX_TOKENS) for c in counts),
    }


@router.post("/embeddings", openapi_extra=json_body(LegacyEmbeddingsRequest))
async def embeddings(request: Request) -> dict[str, Any]:
    """The older single-prompt endpoint."""
    data = await read_json_object(request)
    req = parse_request(LegacyEmbeddingsRequest, data, request.url.path)
    vectors, _ = await _embed(request, req.model, [req.prompt], truncate=True)
    return {"embedding": [float(x) for x in vectors[0]]}
