"""Ollama requests as inferq jobs, and jobs' outcomes as Ollama responses.

Durations are nanoseconds, from the job's timings: `load_duration` is the wait for a warm
worker (queue), `prompt_eval_duration` the time to the first token after that, and
`eval_duration` the rest of the generation.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from inferq.api.ollama.schemas import ChatRequest, GenerateRequest, GenerationFields, Message
from inferq.api.openai.requests import invalid_request_of
from inferq.api.openai.service import live_specs
from inferq.api.schemas import ChatMessage, JobCreate
from inferq.api.state import AppState
from inferq.catalog import ModelSpec, catalog, resolve_model
from inferq.chat_templates import GEMMA3
from inferq.errors import InvalidRequest, ModelNotFound
from inferq.grammar import JSON_OBJECT_GBNF, json_schema_grammar

GRAMMAR_ENGINES = frozenset({"llamacpp"})
_ROLES = ("system", "user", "assistant")
# family, parameter size, quantization of the models inferq ships
_FACTS = {"gemma-3-270m": ("gemma3", "270M", "Q4_K_M")}
_NEVER = "9999-12-31T23:59:59Z"  # workers keep their model loaded until they stop


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def spec_of(state: AppState, name: str) -> ModelSpec:
    """The model Ollama calls `name` (a `:latest` tag is the model itself)."""
    try:
        return resolve_model(state.settings, name.removesuffix(":latest"))
    except ModelNotFound:
        raise ModelNotFound(
            f'model "{name}" not found, try pulling it first', param="model"
        ) from None


def _grammar(state: AppState, spec: ModelSpec, fmt: str | dict[str, Any] | None) -> str | None:
    if fmt in (None, ""):
        return None
    if spec.engine not in GRAMMAR_ENGINES:
        raise InvalidRequest(f"model '{spec.name}' does not support format", param="format")
    if fmt == "json":
        return JSON_OBJECT_GBNF
    if isinstance(fmt, dict):
        return json_schema_grammar(fmt, param="format", tokenizer=state.tokenizers.loaded(spec))
    raise InvalidRequest(f'invalid format "{fmt}": use "json" or a JSON schema', param="format")


def job_of(
    state: AppState, req: GenerationFields, **input: Any
) -> tuple[JobCreate, str | None, bool]:
    """The job, its grammar, and whether max_tokens fills the rest of the context."""
    spec = spec_of(state, req.model)
    opts = req.options
    num_predict = opts.num_predict if opts else None
    if num_predict == 0 or (num_predict or 0) < -2:
        raise InvalidRequest("num_predict must be positive, -1 or -2", param="num_predict")
    # Ollama stops at the context rather than refuse a num_predict past it.
    fill = num_predict is None or num_predict < 0 or num_predict > spec.context_length
    max_tokens = 1 if fill or num_predict is None else num_predict
    try:
        body = JobCreate(
            model=spec.name,
            max_tokens=max_tokens,
            temperature=0.8 if opts is None or opts.temperature is None else opts.temperature,
            top_p=0.9 if opts is None or opts.top_p is None else opts.top_p,
            stop=opts.stop if opts else None,
            seed=None if opts is None or opts.seed is None else opts.seed % 2**32,
            presence_penalty=(opts.presence_penalty if opts else None) or 0.0,
            frequency_penalty=(opts.frequency_penalty if opts else None) or 0.0,
            cache=req.cache,
            **input,
        )
    except ValidationError as exc:
        raise InvalidRequest(str(invalid_request_of(exc).message)) from None
    return body, _grammar(state, spec, req.format), fill


def chat_messages(messages: list[Message]) -> list[ChatMessage]:
    out = []
    for i, message in enumerate(messages):
        if message.role not in _ROLES:
            raise InvalidRequest(
                f"invalid role '{message.role}' in messages[{i}]: inferq supports "
                "system, user and assistant",
                param="messages",
            )
        if message.images:
            raise InvalidRequest("images are not supported by this model", param="images")
        out.append(ChatMessage(role=message.role, content=message.content))
    return out


def chat_job(state: AppState, req: ChatRequest) -> tuple[JobCreate, str | None, bool]:
    if req.tools:
        raise InvalidRequest(f"{req.model} does not support tools", param="tools")
    return job_of(state, req, messages=chat_messages(req.messages or []))


def generate_job(state: AppState, req: GenerateRequest) -> tuple[JobCreate, str | None, bool]:
    if req.images:
        raise InvalidRequest("images are not supported by this model", param="images")
    if req.suffix:
        raise InvalidRequest(f"{req.model} does not support insert", param="suffix")
    assert req.prompt
    if req.raw:
        return job_of(state, req, prompt=req.prompt)
    messages = [ChatMessage(role="system", content=req.system)] if req.system else []
    messages.append(ChatMessage(role="user", content=req.prompt))
    return job_of(state, req, messages=messages)


def durations(end: dict[str, Any]) -> dict[str, int]:
    usage, timings = end.get("usage") or {}, end.get("timings") or {}

    def ms(name: str) -> float:
        return float(timings.get(name) or 0.0)

    total, queue, ttft = ms("total_ms"), ms("queue_ms"), ms("ttft_ms") or ms("total_ms")
    return {
        "total_duration": int(total * 1e6),
        "load_duration": int(queue * 1e6),
        "prompt_eval_count": int(usage.get("prompt_tokens", 0)),
        "prompt_eval_duration": int(max(ttft - queue, 0.0) * 1e6),
        "eval_count": int(usage.get("completion_tokens", 0)),
        "eval_duration": int(max(total - ttft, 0.0) * 1e6),
    }


def done_reason(end: dict[str, Any]) -> str:
    return "length" if end.get("finish_reason") == "length" else "stop"


def _file_facts(spec: ModelSpec) -> tuple[int, str, str]:
    """Size, digest and modification time. The digest identifies the file (name, size,
    mtime), it is not a hash of its bytes: hashing 250 MB per /api/tags would be slow."""
    if spec.path is not None and spec.path.exists():
        stat = spec.path.stat()
        size, modified = stat.st_size, stat.st_mtime
    else:
        size, modified = 0, 0.0
    digest = hashlib.sha256(f"{spec.name}:{size}:{modified}".encode()).hexdigest()
    when = datetime.fromtimestamp(modified, UTC).isoformat().replace("+00:00", "Z")
    return size, digest, when


def details(spec: ModelSpec) -> dict[str, Any]:
    family, params, quant = _FACTS.get(spec.name, (spec.engine, "unknown", "unknown"))
    return {
        "parent_model": "",
        "format": "gguf" if spec.engine == "llamacpp" else spec.engine,
        "family": family,
        "families": [family],
        "parameter_size": params,
        "quantization_level": quant,
    }


def installed_models(state: AppState) -> list[ModelSpec]:
    return [s for s in catalog(state.settings).values() if installed(s)]


def installed(spec: ModelSpec) -> bool:
    return spec.path is None or spec.path.exists()


def tag_entry(spec: ModelSpec) -> dict[str, Any]:
    size, digest, modified = _file_facts(spec)
    name = f"{spec.name}:latest"
    return {
        "name": name,
        "model": name,
        "modified_at": modified,
        "size": size,
        "digest": digest,
        "details": details(spec),
    }


async def running(state: AppState) -> list[dict[str, Any]]:
    entries = []
    for spec in await live_specs(state):
        entry = tag_entry(spec)
        del entry["modified_at"]
        entry.update(expires_at=_NEVER, size_vram=0, context_length=spec.context_length)
        entries.append(entry)
    return entries


def show(spec: ModelSpec) -> dict[str, Any]:
    _, _, modified = _file_facts(spec)
    info = details(spec)
    template = GEMMA3 if info["family"] == "gemma3" else "{{ .Prompt }}"
    return {
        "modelfile": f"# Modelfile generated by inferq\nFROM {spec.path or spec.name}\n",
        "parameters": "temperature 0.8\ntop_p 0.9",
        "template": template,
        "details": info,
        "model_info": {
            "general.architecture": info["family"],
            f"{info['family']}.context_length": spec.context_length,
        },
        "capabilities": ["completion"],
        "modified_at": modified,
    }


def ndjson(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"
