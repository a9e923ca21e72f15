"""The models inferq knows, and which engine serves each.

Until the model registry lands, the catalog is the bundled Gemma 3 270M on llama.cpp and the
`echo` test model. Everything that needs a model's facts asks here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from inferq.errors import ModelNotFound
from inferq.settings import Settings

BUNDLED_MODEL = "gemma-3-270m"
BUNDLED_GGUF = "gemma-3-270m-q4_k_m.gguf"
ECHO_MODEL = "echo"
# The bundled weights converted for MLX by `inferq models convert` (a folder in model_dir).
MLX_MODEL = "gemma-3-270m-mlx"
# Any model an Ollama host serves is `ollama/<its Ollama name>`, e.g. `ollama/gemma3:270m`;
# whether the host has it is checked by the worker at start, not by the API.
OLLAMA_PREFIX = "ollama/"
_OLLAMA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?(:[A-Za-z0-9._-]+)?")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    engine: str
    context_length: int
    path: Path | None = None
    # The GGUF whose vocabulary and chat template the API tokenizes with; None = word counts.
    vocab_path: Path | None = None

    @property
    def vocab(self) -> Path | None:
        return self.vocab_path or (self.path if self.engine == "llamacpp" else None)


def catalog(settings: Settings) -> Mapping[str, ModelSpec]:
    """The models every install has, by name. Every request resolves its model through it,
    so it is built once per model directory and context length (its path joins and specs
    were 1.4 % of the API's samples under a storm of L1 hits)."""
    return _catalog(settings.model_dir, settings.context_length)


@functools.lru_cache(maxsize=8)
def _catalog(model_dir: Path, context_length: int) -> Mapping[str, ModelSpec]:
    return MappingProxyType(
        {
            BUNDLED_MODEL: ModelSpec(
                name=BUNDLED_MODEL,
                engine="llamacpp",
                context_length=context_length,
                path=model_dir / BUNDLED_GGUF,
            ),
            ECHO_MODEL: ModelSpec(name=ECHO_MODEL, engine="echo", context_length=context_length),
            MLX_MODEL: ModelSpec(
                name=MLX_MODEL,
                engine="mlx",
                context_length=context_length,
                path=model_dir / MLX_MODEL,
                # Converted from the bundled GGUF: the same vocabulary and template.
                vocab_path=model_dir / BUNDLED_GGUF,
            ),
        }
    )


def ollama_spec(settings: Settings, name: str) -> ModelSpec | None:
    """The spec of `ollama/<name>`, or None when `name` is not an Ollama model name."""
    if not name.startswith(OLLAMA_PREFIX):
        return None
    if not _OLLAMA_NAME.fullmatch(name[len(OLLAMA_PREFIX) :]):
        return None
    return ModelSpec(name=name, engine="ollama", context_length=settings.context_length)


def resolve_model(settings: Settings, name: str) -> ModelSpec:
    if (spec := ollama_spec(settings, name)) is not None:
        return spec
    try:
        return catalog(settings)[name]
    except KeyError:
        known = ", ".join(sorted(catalog(settings)))
        raise ModelNotFound(
            f"The model '{name}' does not exist. Known models: {known}.", param="model"
        ) from None
