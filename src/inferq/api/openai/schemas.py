"""The OpenAI wire protocol: field names and order as OpenAI documents them.

Requests accept unknown fields (kept in `model_extra`, logged and ignored), as vLLM's
OpenAIBaseModel does. Numbers and flags are strict: "0.5" is not a temperature.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inferq.api.schemas import CacheOptions


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class StreamOptions(OpenAIRequest):
    include_usage: bool = Field(default=False, strict=True)


class JsonSchemaFormat(OpenAIRequest):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIRequest):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingFields(OpenAIRequest):
    """What chat and text completions share."""

    model: str = Field(strict=True, min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, strict=True, ge=1)
    temperature: float | None = Field(default=None, strict=True, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, strict=True, gt=0.0, le=1.0)
    n: int | None = Field(default=None, strict=True, ge=1, le=4)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, strict=True)
    presence_penalty: float | None = Field(default=None, strict=True, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, strict=True, ge=-2.0, le=2.0)
    user: str | None = Field(default=None, strict=True, max_length=256)
    stream: bool | None = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    cache: CacheOptions | None = None  # inferq's own, as on /v1/jobs (extra_body in the clients)


class ChatCompletionRequest(SamplingFields):
    # Checked message by message in `messages.py`, so each error names the exact place.
    messages: list[Any]
    max_completion_tokens: int | None = Field(default=None, strict=True, ge=1)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = Field(default=None, strict=True)
    tools: list[Any] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[Any]
    # OpenAI's legacy completions default to 16 tokens.
    max_tokens: int | None = Field(default=16, strict=True, ge=1)
    echo: bool | None = Field(default=False, strict=True)
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = Field(default=None, strict=True, ge=1)


class EmbeddingRequest(OpenAIRequest):
    model: str = Field(strict=True, min_length=1, max_length=200)
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, strict=True, ge=1)
    user: str | None = Field(default=None, strict=True, max_length=256)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
