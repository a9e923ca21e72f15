"""Relaying job events as a client protocol's stream: OpenAI SSE chunks (here) or Ollama NDJSON.

`relay` walks the merged events of a request's jobs and asks a `Frames` object for the bytes
of each step; the formats stay small and the loop is written once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from inferq.api.openai.jobrun import merged_events, raise_for_outcome
from inferq.api.state import AppState
from inferq.db.models import Job
from inferq.errors import InferqError


class Frames(Protocol):
    def opening(self, index: int) -> bytes | None: ...

    def token(self, index: int, text: str) -> bytes: ...

    def finish(self, index: int, end: dict[str, Any]) -> bytes | None: ...

    def error(self, exc: InferqError) -> bytes: ...

    def closing(self) -> bytes | None: ...


class Restarted(InferqError):
    status_code = 503
    error_type = "server_error"
    code = "job_restarted"


async def relay(state: AppState, jobs: list[Job], frames: Frames) -> AsyncIterator[bytes]:
    """The whole stream of a request; ends with an error frame if a job did not end well."""
    sent = [False] * len(jobs)
    for index in range(len(jobs)):
        if (frame := frames.opening(index)) is not None:
            yield frame
    async for index, event in merged_events(state, jobs):
        kind = event["type"]
        if kind == "token":
            sent[index] = True
            yield frames.token(index, event["text"])
            continue
        if kind == "restart":
            if not sent[index]:
                continue
            yield frames.error(Restarted("The job's worker failed mid-stream; retry."))
            return
        try:
            raise_for_outcome(jobs[index], event)
        except InferqError as exc:
            yield frames.error(exc)
            return
        if (frame := frames.finish(index, event)) is not None:
            yield frame
    if (frame := frames.closing()) is not None:
        yield frame


def sse_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def finish_reason_of(end: dict[str, Any]) -> str:
    reason = end.get("finish_reason") or "stop"
    return reason if reason in ("stop", "length") else "stop"


class UsageCount:
    """Tokens of the choices of one request, as they end (a null `usage` counts 0)."""

    def __init__(self, jobs: list[Job]):
        self.prompt_tokens = jobs[0].prompt_tokens
        self.completion_tokens = 0

    def add(self, end: dict[str, Any]) -> None:
        self.completion_tokens += int((end.get("usage") or {}).get("completion_tokens", 0))

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class OpenAIFrames:
    """What chat and text completion chunks share: ids, usage chunk, errors, [DONE]."""

    object_name = "chat.completion.chunk"

    def __init__(self, jobs: list[Job], model: str, include_usage: bool, fingerprint: str):
        self._usage = UsageCount(jobs)
        self._include_usage = include_usage
        self._base: dict[str, Any] = {
            "id": completion_id(self.object_name, jobs[0]),
            "object": self.object_name,
            "created": int(jobs[0].created_at.timestamp()),
            "model": model,
            "system_fingerprint": fingerprint,
        }

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        payload = {**self._base, "choices": choices}
        if self._include_usage:
            payload["usage"] = usage
        return sse_data(payload)

    def finish(self, index: int, end: dict[str, Any]) -> bytes | None:
        self._usage.add(end)
        return self.chunk([self.choice(index, None, finish_reason_of(end))])

    def choice(self, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, exc: InferqError) -> bytes:
        return sse_data(exc.to_body())

    def closing(self) -> bytes | None:
        usage = self.chunk([], self._usage.as_dict()) if self._include_usage else b""
        return usage + b"data: [DONE]\n\n"


class ChatFrames(OpenAIFrames):
    object_name = "chat.completion.chunk"

    def opening(self, index: int) -> bytes | None:
        delta = {"role": "assistant", "content": "", "refusal": None}
        return self.chunk([{**self._choice(index, None), "delta": delta}])

    def token(self, index: int, text: str) -> bytes:
        return self.chunk([self.choice(index, text, None)])

    def choice(self, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        return self._choice(index, finish, {} if text is None else {"content": text})

    def _choice(
        self, index: int, finish: str | None, delta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}


class TextFrames(OpenAIFrames):
    object_name = "text_completion"

    def __init__(self, *args: Any, echo_prompt: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._echo = echo_prompt

    def opening(self, index: int) -> bytes | None:
        return None if self._echo is None else self.token(index, self._echo)

    def token(self, index: int, text: str) -> bytes:
        return self.chunk([self.choice(index, text, None)])

    def choice(self, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        return {"text": text or "", "index": index, "logprobs": None, "finish_reason": finish}


def completion_id(object_name: str, job: Job) -> str:
    prefix = "chatcmpl" if object_name.startswith("chat") else "cmpl"
    return f"{prefix}-{job.id.hex}"
