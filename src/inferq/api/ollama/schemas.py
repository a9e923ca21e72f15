"""Ollama's request bodies, field names as its API documents them (docs/api.md).

Unknown fields are accepted and ignored, as Ollama itself does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferq.api.schemas import CacheOptions


class OllamaRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class Options(OllamaRequest):
    """The runtime options inferq maps; the rest (num_ctx, top_k, mirostat...) are ignored."""

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    num_predict: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)


class Message(OllamaRequest):
    role: str
    content: str = ""
    images: list[Any] | None = None


class GenerationFields(OllamaRequest):
    model: str = Field(min_length=1, max_length=200)
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: Any = None
    cache: CacheOptions | None = None  # inferq's own, as on /v1/jobs


class ChatRequest(GenerationFields):
    messages: list[Message] | None = None
    tools: list[Any] | None = None


class GenerateRequest(GenerationFields):
    prompt: str | None = None
    system: str | None = None
    suffix: str | None = None
    raw: bool = False
    images: list[Any] | None = None


class EmbedRequest(OllamaRequest):
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = None


class LegacyEmbeddingsRequest(OllamaRequest):
    model: str = Field(min_length=1, max_length=200)
    prompt: str


class ShowRequest(OllamaRequest):
    model: str | None = None
    name: str | None = None  # the older spelling
