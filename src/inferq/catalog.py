"""The models inferq knows, and which engine serves each.

Until the model registry lands, the catalog is the bundled Gemma 3 270M on llama.cpp and the
`echo` test model. Everything that needs a model's facts asks here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferq.errors import ModelNotFound
from inferq.settings import Settings

BUNDLED_MODEL = "gemma-3-270m"
BUNDLED_GGUF = "gemma-3-270m-q4_k_m.gguf"
ECHO_MODEL = "echo"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    engine: str
    context_length: int
    path: Path | None = None


def catalog(settings: Settings) -> dict[str, ModelSpec]:
    return {
        BUNDLED_MODEL: ModelSpec(
            name=BUNDLED_MODEL,
            engine="llamacpp",
            context_length=settings.context_length,
            path=settings.model_dir / BUNDLED_GGUF,
        ),
        ECHO_MODEL: ModelSpec(
            name=ECHO_MODEL, engine="echo", context_length=settings.context_length
        ),
    }


def resolve_model(settings: Settings, name: str) -> ModelSpec:
    try:
        return catalog(settings)[name]
    except KeyError:
        known = ", ".join(sorted(catalog(settings)))
        raise ModelNotFound(
            f"The model '{name}' does not exist. Known models: {known}.", param="model"
        ) from None
