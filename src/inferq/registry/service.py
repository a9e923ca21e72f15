"""Resolution: a requested model name to a version, then to a live worker pool.

`gemma-3-270m` is its active version (or, while a traffic policy runs, the version the
policy picks for this user); `gemma-3-270m:1.0.0` pins a version. The registry is read from
PostgreSQL and cached per API process; every change bumps a generation counter in Redis and
announces it, so all API processes see an activation on their next request (a started
registry follows the announcements; one that is not GETs the counter on every request).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.catalog import ModelSpec, catalog, ollama_spec
from inferq.errors import ModelNotFound, NotFound, ServiceUnavailable
from inferq.queue.names import DEFAULT_MODEL_VERSION, REGISTRY_CHANNEL, REGISTRY_GENERATION_KEY
from inferq.queue.registry import registry_view
from inferq.registry import policies, repository
from inferq.registry.breaker import Breakers
from inferq.registry.generation import GenerationFollower, generation_of
from inferq.registry.models import ModelVersion, TrafficPolicy, VersionState
from inferq.registry.routing import Pool, pools_of, rank, with_adapter
from inferq.settings import Settings

log = logging.getLogger(__name__)

# A stale cache is re-read at least this often, even without a generation bump.
_MAX_AGE_S = 30.0
_MAX_WAITS = 3  # reads a caller waits for while generations keep changing under it
CATALOG_WEIGHTS = "catalog"  # the seeded versions' weights: wherever the catalog says


class AdapterNotFound(NotFound):
    code = "adapter_not_found"


@dataclass(frozen=True)
class Target:
    """The version a request resolved to, before a pool is chosen."""

    spec: ModelSpec
    version: str | None  # None: a model outside the registry (ollama/...)
    fallback: str | None = None
    policy: str | None = None
    arm: str | None = None
    fallback_from: str | None = None

    def route_json(self, **pool: Any) -> dict[str, Any]:
        """How the job was routed, as stored on its row; `pool` adds the queue it went to."""
        route = {"policy": self.policy, "arm": self.arm, "fallback_from": self.fallback_from}
        return {k: v for k, v in {**pool, **route}.items() if v not in (None, False)}


@dataclass(frozen=True)
class Route:
    target: Target
    queue: str
    pool: str
    probe: bool = False
    adapter: str | None = None

    def as_json(self) -> dict[str, Any]:
        return self.target.route_json(
            queue=self.queue, pool=self.pool, adapter=self.adapter, probe=self.probe
        )


@dataclass
class Snapshot:
    versions: dict[tuple[str, str], ModelVersion] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    policies: dict[str, TrafficPolicy] = field(default_factory=dict)


def split_name(requested: str) -> tuple[str, str | None]:
    """`name:version` -> (name, version); Ollama names keep their own `:tag`."""
    if requested.startswith("ollama/") or ":" not in requested:
        return requested, None
    name, _, version = requested.rpartition(":")
    return name, version or None


def spec_of(settings: Settings, row: ModelVersion) -> ModelSpec:
    known = catalog(settings).get(row.name)
    if row.weights == CATALOG_WEIGHTS and known is not None:
        return known
    path = Path(row.weights).expanduser() if row.weights else None
    return ModelSpec(row.name, row.engine, row.context_length, path)


def seed_rows(settings: Settings) -> list[ModelVersion]:
    """The catalog's models as version 1.0.0, active: what a fresh database starts with."""
    return [
        ModelVersion(
            id=uuid.uuid4(),
            name=spec.name,
            version=DEFAULT_MODEL_VERSION,
            engine=spec.engine,
            weights=CATALOG_WEIGHTS,
            context_length=spec.context_length,
            sampling={},
            tags=["catalog"],
            description="seeded from the built-in catalog",
            performance={},
            state=VersionState.ACTIVE.value,
        )
        for spec in catalog(settings).values()
    ]


class ModelRegistry:
    """One per API process: the cached registry, resolution and pool choice."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
    ):
        self.settings = settings
        self.redis = client
        self.sessions = sessions
        self.breakers = Breakers(settings, client)
        self._snapshot = Snapshot()
        self._follower = GenerationFollower(client)
        self._generation: int | None = None
        self._read_at = float("-inf")
        self._reading: asyncio.Future[None] | None = None
        self._seeded = False

    async def start(self) -> None:
        """Follow the generation's announcements, and read (and seed) the registry."""
        await self._follower.start()
        await self.snapshot()

    async def stop(self) -> None:
        await self._follower.stop()

    async def changed(self) -> None:
        """Call after committing a registry change: every API process re-reads."""
        generation = await self.redis.incr(REGISTRY_GENERATION_KEY)
        await self.redis.publish(REGISTRY_CHANNEL, generation)
        self._follower.saw(generation)
        self._read_at = float("-inf")

    async def snapshot(self) -> Snapshot:
        """The registry as of the current generation, re-read in the background every 30 s.

        Each caller may hold a pooled connection already (a chat turn's transaction). When
        50 of them each opened another for their own read, the pool ran dry and they waited
        on each other until its timeout. So one read runs at a time, and only a new
        generation (a registry change) makes callers wait for it; an old snapshot of the
        same generation is served while it is re-read.
        """
        for _ in range(_MAX_WAITS):
            generation = self._follower.current
            if generation is None:
                generation = generation_of(await self.redis.get(REGISTRY_GENERATION_KEY))
            # Never read, a new generation, or this process's own change (`changed`): wait.
            changed = generation != self._generation or self._read_at == float("-inf")
            if not changed and time.monotonic() - self._read_at <= _MAX_AGE_S:
                break
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read(generation))
                self._reading.add_done_callback(_log_failed_read)
            if not changed:
                break
            # A read already under way may have begun before the change; then look again.
            await asyncio.shield(self._reading)
        return self._snapshot

    async def _read(self, generation: int) -> None:
        async with self.sessions() as session:
            await self._seed(session)
            self._snapshot = await _load(session)
        self._generation, self._read_at = generation, time.monotonic()

    async def _seed(self, session: AsyncSession) -> None:
        if self._seeded:
            return
        present = await repository.names(session)
        for row in seed_rows(self.settings):
            if row.name not in present:
                await repository.insert_if_absent(session, row)
        await session.commit()
        self._seeded = True

    async def resolve(self, requested: str, sticky_key: str | None = None) -> Target:
        """The version a request for `requested` goes to (404 for an unknown one)."""
        if (spec := ollama_spec(self.settings, requested)) is not None:
            return Target(spec, None)
        name, version = split_name(requested)
        snap = await self.snapshot()
        policy_id = arm = None
        if version is None:
            policy = snap.policies.get(name)
            if policy is not None:
                chosen = policies.choose_arm(policy, sticky_key)
                version, policy_id, arm = chosen.version, str(policy.id), chosen.name
            else:
                version = snap.active.get(name)
        row = snap.versions.get((name, version or ""))
        if row is None or row.state == VersionState.RETIRED.value:
            raise ModelNotFound(_not_found(snap, name, version), param="model")
        spec = spec_of(self.settings, row)
        return Target(spec, row.version, row.fallback, policy_id, arm)

    async def route(self, target: Target, job_id: str, adapter: str | None = None) -> Route:
        """A live pool for `target`, by load, past the breakers; else its fallback, else 503."""
        spec = target.spec
        workers = await registry_view(self.redis).workers()
        live = list(pools_of(workers, spec.engine, spec.name, target.version).values())
        if not live:
            raise ServiceUnavailable(
                f"No live worker serves model '{_label(target)}' (engine {spec.engine}); "
                "retry shortly.",
                code="no_worker_available",
                retry_after_s=max(1, math.ceil(self.settings.worker_heartbeat_s)),
            )
        candidates = with_adapter(live, adapter)
        if not candidates:
            raise AdapterNotFound(
                f"No live worker of model '{_label(target)}' has the adapter '{adapter}' loaded.",
                param="adapter",
            )
        await self._depths(candidates)
        wait = math.inf
        for pool in rank(candidates):
            admission = await self.breakers.admit(pool.queue, job_id)
            if admission.allowed:
                return Route(target, pool.queue, pool.pool, admission.probe, adapter)
            wait = min(wait, admission.retry_after_s)
        return await self._fallback(target, job_id, wait)

    async def _fallback(self, target: Target, job_id: str, wait: float) -> Route:
        if target.fallback and target.fallback_from is None:
            fallback = await self.resolve(target.fallback)
            marked = Target(fallback.spec, fallback.version, None, target.policy, target.arm,
                            fallback_from=_label(target))  # fmt: skip
            return await self.route(marked, job_id)
        raise ServiceUnavailable(
            f"Model '{_label(target)}' is unavailable: its workers are failing (circuit "
            "breaker open); retry later.",
            code="model_unavailable",
            retry_after_s=max(1, math.ceil(wait)),
        )

    async def _depths(self, pools: list[Pool]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.llen(pool.queue)
            depths = await pipe.execute()
        for pool, depth in zip(pools, depths, strict=True):
            pool.depth = int(depth)


def _label(target: Target) -> str:
    return f"{target.spec.name}:{target.version}" if target.version else target.spec.name


def _not_found(snap: Snapshot, name: str, version: str | None) -> str:
    names = sorted({n for n, _ in snap.versions})
    if any(n == name for n, _ in snap.versions):
        if version is None:
            return f"The model '{name}' has no active version."
        return f"The model '{name}' has no version '{version}' (or it is retired)."
    return f"The model '{name}' does not exist. Known models: {', '.join(names)}."


def _log_failed_read(read: asyncio.Future[None]) -> None:
    """A background re-read that failed is retried on the next call; say why it failed."""
    if not read.cancelled() and (exc := read.exception()) is not None:
        log.warning("registry read failed", extra={"error": f"{type(exc).__name__}: {exc}"})


async def _load(session: AsyncSession) -> Snapshot:
    snap = Snapshot()
    for row in await repository.list_versions(session):
        snap.versions[(row.name, row.version)] = row
        if row.state == VersionState.ACTIVE.value:
            snap.active[row.name] = row.version
    for policy in await repository.running_policies(session):
        snap.policies[policy.model] = policy
    session.expunge_all()
    return snap


_registries: weakref.WeakKeyDictionary[aioredis.Redis, ModelRegistry] = weakref.WeakKeyDictionary()


def model_registry(
    settings: Settings, client: aioredis.Redis, sessions: async_sessionmaker[AsyncSession]
) -> ModelRegistry:
    """The one registry of an API process's Redis client."""
    registry = _registries.get(client)
    if registry is None:
        registry = _registries[client] = ModelRegistry(settings, client, sessions)
    return registry
