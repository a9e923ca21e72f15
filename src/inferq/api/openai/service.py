"""OpenAI requests as inferq jobs, and jobs' outcomes as OpenAI responses."""

from __future__ import annotations

import base64
import time
from typing import Any

from pydantic import ValidationError

from inferq import __version__
from inferq.api.openai.jobrun import ChoiceResult
from inferq.api.openai.requests import chat_messages, invalid_request_of
from inferq.api.openai.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    Model,
    ModelList,
    ResponseFormat,
    SamplingFields,
    Usage,
)
from inferq.api.openai.streaming import UsageCount, completion_id, finish_reason_of
from inferq.api.schemas import ChatMessage, JobCreate
from inferq.api.state import AppState
from inferq.catalog import ModelSpec, catalog, resolve_model
from inferq.db.models import Job
from inferq.embeddings import (
    DIMENSIONS,
    EMBEDDING_MODEL,
    MAX_TOKENS,
    Embedder,
    Vectors,
    check_input_count,
)
from inferq.errors import InvalidRequest, ModelNotFound
from inferq.grammar import JSON_OBJECT_GBNF, json_schema_grammar
from inferq.queue.registry import live_workers

# Engines that honour SamplingParams.grammar; elsewhere response_format is refused.
GRAMMAR_ENGINES = frozenset({"llamacpp"})
_STARTED = int(time.time())


def fingerprint(engine: str) -> str:
    return f"inferq-{__version__}-{engine}"


def _unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _job_create(req: SamplingFields, max_tokens: int | None, **input: Any) -> JobCreate:
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(  # OpenAI's own refusal
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    try:
        return JobCreate(
            model=req.model,
            max_tokens=max_tokens or 1,  # fill_context sizes an unset max_tokens later
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=req.stop,
            seed=None if req.seed is None else req.seed % 2**32,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            user=req.user,
            cache=req.cache,
            **input,
        )
    except ValidationError as exc:
        raise invalid_request_of(exc) from None


def chat_job(req: ChatCompletionRequest) -> tuple[JobCreate, int | None]:
    """The job of a chat request, and the max_tokens it asked for (None: up to the context)."""
    if req.tools:
        raise _unsupported("tools", "Tool calling is not supported by this server.")
    if req.logprobs:
        raise _unsupported("logprobs", "logprobs are not supported by this server.")
    messages = [ChatMessage(**m) for m in chat_messages(req.messages)]
    max_tokens = req.max_completion_tokens or req.max_tokens
    return _job_create(req, max_tokens, messages=messages), max_tokens


def completion_job(req: CompletionRequest) -> JobCreate:
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _unsupported(
                "prompt",
                "Give the prompt as one string (token arrays and batches of "
                "prompts are not supported; send one request per prompt).",
            )
        prompt = prompt[0]
    if req.suffix:
        raise _unsupported("suffix", "suffix (fill-in-the-middle) is not supported.")
    if req.logprobs:
        raise _unsupported("logprobs", "logprobs are not supported by this server.")
    if req.best_of not in (None, 1):
        raise _unsupported("best_of", "best_of is not supported; use n.")
    return _job_create(req, req.max_tokens, prompt=prompt)


def grammar_of(state: AppState, model: str, fmt: ResponseFormat | None) -> str | None:
    """GBNF for `response_format`, refused for engines that cannot constrain decoding."""
    if fmt is None or fmt.type == "text":
        return None
    spec = resolve_model(state.settings, model)
    if spec.engine not in GRAMMAR_ENGINES:
        raise _unsupported(
            "response_format",
            f"Model '{spec.name}' ({spec.engine}) cannot constrain its output; "
            "response_format needs a llama.cpp model.",
        )
    if fmt.type == "json_object":
        return JSON_OBJECT_GBNF
    if fmt.json_schema is None:
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )
    return json_schema_grammar(
        fmt.json_schema.schema_,
        param="response_format.json_schema.schema",
        tokenizer=state.tokenizers.loaded(spec),
    )


def _usage(jobs: list[Job], results: list[ChoiceResult]) -> Usage:
    usage = UsageCount(jobs)
    for result in results:
        usage.add(result.end or {})
    return Usage(**usage.as_dict())


def chat_completion(jobs: list[Job], results: list[ChoiceResult], model: str) -> ChatCompletion:
    choices = [
        ChatChoice(
            index=r.index,
            message=AssistantMessage(content=r.text),
            finish_reason=finish_reason_of(r.end or {}),
        )
        for r in results
    ]
    return ChatCompletion(
        id=completion_id("chat", jobs[0]),
        created=int(jobs[0].created_at.timestamp()),
        model=model,
        choices=choices,
        usage=_usage(jobs, results),
        system_fingerprint=fingerprint(jobs[0].engine),
    )


def text_completion(
    jobs: list[Job], results: list[ChoiceResult], model: str, echo: str | None
) -> Completion:
    choices = [
        CompletionChoice(
            text=(echo or "") + r.text, index=r.index, finish_reason=finish_reason_of(r.end or {})
        )
        for r in results
    ]
    return Completion(
        id=completion_id("text", jobs[0]),
        created=int(jobs[0].created_at.timestamp()),
        model=model,
        choices=choices,
        usage=_usage(jobs, results),
        system_fingerprint=fingerprint(jobs[0].engine),
    )


async def served_models(state: AppState, embedder: Embedder | None) -> list[Model]:
    """Models a live worker serves (by the registry's `model` and `engine`), and the embedder."""
    models = [
        Model(id=spec.name, created=_STARTED, owned_by="inferq") for spec in await live_specs(state)
    ]
    if embedder is not None and embedder.ready:
        created = int(embedder.loaded_at or _STARTED)
        models.append(Model(id=EMBEDDING_MODEL, created=created, owned_by="sentence-transformers"))
    return models


async def live_specs(state: AppState) -> list[ModelSpec]:
    """Known models that a live worker serves with the engine the catalog expects."""
    live = {(w.get("model"), w.get("engine")) for w in await live_workers(state.redis)}
    specs = []
    for name, engine in sorted(live, key=str):
        if not isinstance(name, str):
            continue
        try:
            spec = resolve_model(state.settings, name)
        except ModelNotFound:
            continue
        if spec.engine == engine:
            specs.append(spec)
    return specs


async def find_model(state: AppState, embedder: Embedder | None, model_id: str) -> Model:
    for model in await served_models(state, embedder):
        if model.id == model_id:
            return model
    raise ModelNotFound(
        f"The model '{model_id}' does not exist or no worker serves it.", param="model"
    )


def model_list(models: list[Model]) -> ModelList:
    return ModelList(data=models)


def embedding_inputs(req: EmbeddingRequest, state: AppState) -> list[str]:
    from inferq.embeddings import is_embedding_model

    if not is_embedding_model(req.model):
        spec: ModelSpec | None = catalog(state.settings).get(req.model)
        if spec is None:
            raise ModelNotFound(
                f"The model '{req.model}' does not exist. The embedding model is "
                f"'{EMBEDDING_MODEL}'.",
                param="model",
            )
        raise InvalidRequest(
            f"Model '{req.model}' does not produce embeddings; use '{EMBEDDING_MODEL}'.",
            param="model",
            code="model_not_embedding",
        )
    if req.dimensions is not None and req.dimensions != DIMENSIONS:
        raise _unsupported("dimensions", f"{EMBEDDING_MODEL} has {DIMENSIONS} dimensions only.")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise InvalidRequest("'input' must not be empty.", param="input", code="empty_array")
    check_input_count(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _unsupported(
                f"input[{i}]", "input must be strings (token arrays are not supported)."
            )
        if not text:
            raise InvalidRequest(f"'input[{i}]' must not be empty.", param=f"input[{i}]")
    return texts


def check_lengths(counts: list[int], *, single: bool) -> None:
    for i, count in enumerate(counts):
        if count > MAX_TOKENS:
            param = "input" if single else f"input[{i}]"
            raise InvalidRequest(
                f"This model's maximum input length is {MAX_TOKENS} tokens; {param} has {count}.",
                param=param,
                code="context_length_exceeded",
            )


def embedding_list(vectors: Vectors, counts: list[int], encoding_format: str) -> EmbeddingList:
    data = [
        Embedding(embedding=_encode_vector(row, encoding_format), index=i)
        for i, row in enumerate(vectors)
    ]
    tokens = sum(counts)
    return EmbeddingList(
        data=data,
        model=EMBEDDING_MODEL,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _encode_vector(row: Any, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 is the little-endian float32 bytes of the vector.
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return [float(x) for x in row]
