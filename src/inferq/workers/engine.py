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
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # A GBNF grammar that constrains decoding (JSON mode, JSON schema); None = free text.
    grammar: str | None = None


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
    `generate` may be called from several threads at once (one per running job).

    `capacity` reports what the registry shows: at least `slots`; engines that know them also
    `slots_busy`, `kv_used` / `kv_total` (KV-cache cells) and `tokens_per_s` (recent, all jobs).
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
        return LlamaCppEngine(
            spec.name,
            spec.path,
            spec.context_length,
            settings.n_threads,
            slots=settings.worker_slots,
            device=settings.worker_device or "cpu",
            exact=settings.llamacpp_exact_batching,
        )
    if spec.engine == "ollama":
        from inferq.workers.ollama import OllamaEngine, ollama_name

        # The host: the worker's --device URL, else OLLAMA_HOST.
        device = settings.worker_device or ""
        host = device if "://" in device else None
        return OllamaEngine(spec.name, ollama_name(spec.name), host=host)
    if spec.engine == "mlx":
        from inferq.workers.mlx import MlxEngine

        assert spec.path is not None
        return MlxEngine(
            spec.name, spec.path, spec.context_length, slots=settings.worker_slots,
            device=settings.worker_device,
        )  # fmt: skip
    raise ValueError(f"unknown engine {spec.engine!r}")
