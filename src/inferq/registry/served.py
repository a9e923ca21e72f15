"""What a worker started with `--model name[:version]` serves, and the queue it consumes.

A catalog name without a version is the catalog's model as version 1.0.0 (no database
needed, as before the registry); any other name is looked up in the registry, so
`inferq worker --model gemma-3-270m:2.0.0` loads that version's weights and consumes its queue.
The worker's pool (`INFERQ_WORKER_POOL`) and LoRA adapters (`INFERQ_WORKER_ADAPTERS`) go into
its heartbeat, where the API's routing reads them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from inferq.catalog import ModelSpec, catalog, ollama_spec
from inferq.db.session import make_engine, make_sessionmaker
from inferq.queue.names import DEFAULT_MODEL_VERSION, pool_queue_name
from inferq.registry import repository
from inferq.registry.models import ModelVersion, VersionState
from inferq.registry.service import spec_of, split_name
from inferq.settings import Settings


@dataclass(frozen=True)
class ServedModel:
    spec: ModelSpec
    version: str
    pool: str
    adapters: tuple[str, ...]

    @property
    def queue(self) -> str:
        return pool_queue_name(self.spec.engine, self.spec.name, self.version, self.pool)

    @property
    def label(self) -> str:
        default = self.version == DEFAULT_MODEL_VERSION
        return self.spec.name if default else f"{self.spec.name}:{self.version}"

    def heartbeat(self) -> dict[str, Any]:
        return {"queue": self.queue, "model_version": self.version, "pool": self.pool,
                "adapters": list(self.adapters)}  # fmt: skip


def served_model(settings: Settings, requested: str) -> ServedModel:
    """Exits the process (SystemExit) for a model or version the registry does not have."""
    adapters = tuple(a.strip() for a in settings.worker_adapters.split(",") if a.strip())
    name, version = split_name(requested)
    spec = ollama_spec(settings, name) or catalog(settings).get(name)
    if spec is not None and version in (None, DEFAULT_MODEL_VERSION):
        return ServedModel(spec, DEFAULT_MODEL_VERSION, settings.worker_pool, adapters)
    row = asyncio.run(_lookup(settings, name, version))
    if row is None or row.state == VersionState.RETIRED.value:
        wanted = f"{name}:{version}" if version else f"an active version of {name}"
        raise SystemExit(f"the model registry has no {wanted}; register it first")
    return ServedModel(spec_of(settings, row), row.version, settings.worker_pool, adapters)


async def _lookup(settings: Settings, name: str, version: str | None) -> ModelVersion | None:
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            if version is not None:
                return await repository.get_version(session, name, version)
            rows = await repository.list_versions(session, name)
            return next((r for r in rows if r.state == VersionState.ACTIVE.value), None)
    finally:
        await engine.dispose()
