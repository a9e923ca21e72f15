"""Wire models of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(strict=True)


class CacheOptions(BaseModel):
    """`mode`: "off" (no lookup, no store), "exact" (L1 only), "semantic" (L1 then L2).
    `ttl`: how long this answer stays cached, in seconds."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "exact", "semantic"] = "semantic"
    ttl: int | None = Field(default=None, strict=True, ge=1)


class JobCreate(BaseModel):
    """A generation request: a raw `prompt`, or `messages` rendered with the model's template."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(strict=True, min_length=1, max_length=200)
    prompt: str | None = Field(default=None, strict=True)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    max_tokens: int = Field(default=256, strict=True, ge=1)
    temperature: float = Field(default=0.8, strict=True, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, strict=True, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = Field(default=None, strict=True, ge=0, le=2**32 - 1)
    # "auto": a prompt too long for the context is compacted (head and tail) instead of a 400.
    truncate: Literal["auto", "disabled"] = "disabled"
    presence_penalty: float = Field(default=0.0, strict=True, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, strict=True, ge=-2.0, le=2.0)
    user: str | None = Field(default=None, max_length=256, description="The end user, recorded.")
    cache: CacheOptions | None = Field(default=None, description="Per-request cache control.")
    adapter: str | None = Field(
        default=None, strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="A LoRA adapter: only workers that declare it loaded serve the job.",
    )  # fmt: skip
    webhook_url: str | None = Field(
        default=None,
        strict=True,
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+[^\s]*$",
        description="POSTed the job's result, signed (Standard Webhooks), when it ends.",
    )

    @field_validator("webhook_url")
    @classmethod
    def _parsable_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018 -- raises for a port out of range or not a number
            except ValueError as exc:  # "http://[::1", "http://host:99999"
                raise ValueError(f"not a valid URL ({exc})") from None
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @model_validator(mode="after")
    def _one_input(self) -> JobCreate:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self

    def sampling(self) -> dict[str, Any]:
        stop = self.stop if isinstance(self.stop, list) else None
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": stop,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str


class JobError(BaseModel):
    code: str
    message: str


class JobAccepted(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: str
    model: str
    created_at: datetime
    links: JobLinks


class JobView(JobAccepted):
    engine: str
    output: str | None
    finish_reason: str | None
    usage: dict[str, int] | None
    timings: dict[str, float | None] | None
    error: JobError | None
    attempts: int
    worker: dict[str, Any] | None
    params: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    cache: str | None = None
    model_version: str | None = None  # the registry version it resolved to
    route: dict[str, Any] | None = None  # its pool, policy arm, fallback (inferq.registry)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    next_cursor: str | None
