"""OpenAI-compatible HTTP surface: chat and text completions, models, embeddings.

Every completion request becomes inferq jobs (one per choice) through `job_service`; the
response carries their ids in `x-inferq-job-id` (the first) and `x-inferq-job-ids` (all).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.api import job_service
from inferq.api.deps import SessionDep, StateDep
from inferq.api.errors import error_response
from inferq.api.idempotency import IdempotentRequest
from inferq.api.openai import service
from inferq.api.openai.jobrun import (
    ChoiceResult,
    collect,
    guard_stream,
    submit_choices,
    unless_disconnected,
)
from inferq.api.openai.requests import parse_request, read_json_object
from inferq.api.openai.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferq.api.openai.streaming import ChatFrames, Frames, TextFrames, relay
from inferq.api.openapi_bodies import json_body
from inferq.api.schemas import JobCreate
from inferq.api.sse import SSE_HEADERS, with_keepalive
from inferq.api.state import AppState
from inferq.cache.service import cache_header
from inferq.db.models import Job
from inferq.embeddings import Embedder
from inferq.errors import InferqError, ServiceUnavailable

router = APIRouter(prefix="/v1", tags=["openai"])


def get_embedder(request: Request) -> Embedder | None:
    embedder: Embedder | None = getattr(request.app.state, "embedder", None)
    return embedder


def job_headers(jobs: list[Job], replayed: bool = False) -> dict[str, str]:
    headers = {
        "x-inferq-job-id": str(jobs[0].id),
        "x-inferq-job-ids": ",".join(str(job.id) for job in jobs),
    }
    if jobs[0].group_id is not None:
        headers["x-inferq-group-id"] = str(jobs[0].group_id)
    if replayed:
        headers["x-inferq-idempotent-replay"] = "true"
    # A hit only when every choice was answered from the cache.
    markers = {cache_header(job) for job in jobs}
    headers["x-inferq-cache"] = markers.pop() if len(markers) == 1 else "miss"
    return headers


def failure(exc: InferqError, headers: dict[str, str] | None = None) -> Response:
    response = error_response(exc)
    response.headers.update(headers or {})
    if exc.status_code in (409, 422):
        # The OpenAI clients retry 409 by default; a conflict here is not transient.
        response.headers["x-should-retry"] = "false"
    return response


@dataclasses.dataclass
class Submitted:
    jobs: list[Job]
    replayed: bool

    @property
    def headers(self) -> dict[str, str]:
        return job_headers(self.jobs, self.replayed)


async def submit(
    request: Request,
    state: AppState,
    session: AsyncSession,
    data: dict[str, Any],
    body: JobCreate,
    n: int,
    options: job_service.SubmitOptions,
) -> Submitted:
    """Create the jobs, or find those an earlier request with this Idempotency-Key made."""
    options = dataclasses.replace(options, cache_control=request.headers.get("cache-control"))
    key = request.headers.get("idempotency-key")
    if key is None:
        return Submitted(await submit_choices(state, session, body, n, options), False)
    idempotent = IdempotentRequest(state, request.url.path, key, data)
    replay = await idempotent.begin()
    if replay is not None:
        return Submitted([await job_service.load_job(session, j) for j in replay], True)
    options = dataclasses.replace(options, idempotency_key=key)
    jobs = await idempotent.create(submit_choices(state, session, body, n, options))
    return Submitted(jobs, False)


def stream(state: AppState, submitted: Submitted, frames: Frames) -> StreamingResponse:
    return StreamingResponse(
        # SSE comments keep idle proxies open and are skipped by the OpenAI clients.
        with_keepalive(guard_stream(state, submitted.jobs, relay(state, submitted.jobs, frames))),
        media_type="text/event-stream",
        headers={**submitted.headers, **SSE_HEADERS},
    )


async def wait_results(
    request: Request, state: AppState, submitted: Submitted
) -> list[ChoiceResult] | None:
    """The jobs' results; None if the client left first (its jobs are then cancelled)."""
    return await unless_disconnected(request, submitted.jobs, state, collect(state, submitted.jobs))


def ok(model: BaseModel, submitted: Submitted) -> Response:
    # pydantic's own encoder: json.dumps of the dumped dict was 2 % of an L1 hit's samples.
    return Response(
        model.model_dump_json(), media_type="application/json", headers=submitted.headers
    )


@router.post("/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request, state: StateDep, session: SessionDep) -> Response:
    data = await read_json_object(request)
    req = parse_request(ChatCompletionRequest, data, request.url.path)
    body, max_tokens = service.chat_job(req)
    grammar = service.grammar_of(state, req.model, req.response_format)
    options = job_service.SubmitOptions(grammar=grammar, fill_context=max_tokens is None)
    submitted = await submit(request, state, session, data, body, req.n or 1, options)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        engine = service.fingerprint(submitted.jobs[0].engine)
        return stream(
            state, submitted, ChatFrames(submitted.jobs, req.model, include_usage, engine)
        )
    try:
        results = await wait_results(request, state, submitted)
    except InferqError as exc:
        return failure(exc, submitted.headers)
    if results is None:
        return Response(status_code=499, headers=submitted.headers)
    return ok(service.chat_completion(submitted.jobs, results, req.model), submitted)


@router.post("/completions", openapi_extra=json_body(CompletionRequest))
async def completions(request: Request, state: StateDep, session: SessionDep) -> Response:
    data = await read_json_object(request)
    req = parse_request(CompletionRequest, data, request.url.path)
    body = service.completion_job(req)
    options = job_service.SubmitOptions(fill_context=req.max_tokens is None)
    submitted = await submit(request, state, session, data, body, req.n or 1, options)
    echo = body.prompt if req.echo else None
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        engine = service.fingerprint(submitted.jobs[0].engine)
        frames = TextFrames(submitted.jobs, req.model, include_usage, engine, echo_prompt=echo)
        return stream(state, submitted, frames)
    try:
        results = await wait_results(request, state, submitted)
    except InferqError as exc:
        return failure(exc, submitted.headers)
    if results is None:
        return Response(status_code=499, headers=submitted.headers)
    return ok(service.text_completion(submitted.jobs, results, req.model, echo), submitted)


@router.get("/models")
async def list_models(request: Request, state: StateDep) -> dict[str, Any]:
    models = await service.served_models(state, get_embedder(request))
    return service.model_list(models).model_dump(mode="json")


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request, state: StateDep) -> dict[str, Any]:
    model = await service.find_model(state, get_embedder(request), model_id)
    return model.model_dump(mode="json")


@router.post("/embeddings", openapi_extra=json_body(EmbeddingRequest))
async def embeddings(request: Request, state: StateDep) -> dict[str, Any]:
    data = await read_json_object(request)
    req = parse_request(EmbeddingRequest, data, request.url.path)
    texts = service.embedding_inputs(req, state)
    embedder = get_embedder(request)
    if embedder is None:
        raise ServiceUnavailable("Embeddings are disabled (INFERQ_EMBEDDINGS_ENABLED).")
    counts = await embedder.count_tokens(texts)
    service.check_lengths(counts, single=isinstance(req.input, str))
    vectors = await embedder.embed(texts)
    return service.embedding_list(vectors, counts, req.encoding_format).model_dump(mode="json")
