"""The interface every engine implements, and the factory that picks one by name."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferq.catalog import ModelSpec
from inferq.settings import Settings


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: SamplingParams


@dataclass(frozen=True)
class GeneratedToken:
    id: int
    text: str


class Engine(Protocol):
    """A loaded model that turns a prompt into a stream of tokens.

    `generate` yields up to `max_tokens` tokens and ends early at the model's end of turn.
    Closing the iterator cancels the generation: the engine frees what it held for it.
    """

    name: str
    model: str

    def load(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, request: GenerationRequest) -> Generator[GeneratedToken, None, None]: ...

    def capacity(self) -> dict[str, Any]: ...

    def unload(self) -> None: ...


def make_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """Build (not load) the engine for a model."""
    if spec.engine == "echo":
        from inferq.workers.echo import EchoEngine

        return EchoEngine(spec.name)
    if spec.engine == "llamacpp":
        from inferq.workers.llamacpp import LlamaCppEngine

        assert spec.path is not None
        return LlamaCppEngine(spec.name, spec.path, spec.context_length, settings.n_threads)
    raise ValueError(f"unknown engine {spec.engine!r}")
