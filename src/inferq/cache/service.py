"""The caches as the API uses them: look up before a job exists, answer a hit as a job.

`submit_job` calls `lookup`, then `attach` on the job it builds (a hit makes it a completed
job with the cached answer; a miss leaves in its params what the worker needs to fill the
caches, and stages the pending L2 row), commits, and on a hit calls `replay`, which writes
the answer's events into the job's replay log so that every surface streams a hit exactly
as it streams a generated answer.

A miss whose L2 partition is empty here cannot find anything by meaning, so it does not
wait for its embedding: `store_entry_later` embeds the prompt and writes the L2 row once the
job is queued (embedding took 6-10 ms of a miss's POST on a 2-core host).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.background import spawn
from inferq.cache.embedder import SemanticEmbedder, TextEmbedder, Vector
from inferq.cache.exact import CachedAnswer, ExactCache
from inferq.cache.guard import compatible
from inferq.cache.index import Match, SemanticIndex
from inferq.cache.keys import CacheScope, build_scope
from inferq.cache.models import CacheEntry
from inferq.cache.policy import CacheMode, CachePolicy, policy_of
from inferq.cache.semantic import IndexSync, change_message, entry_expiry
from inferq.cache.store import CacheStore
from inferq.cache.tenancy import current_tenant, model_version
from inferq.catalog import ModelSpec
from inferq.db.models import Job, JobStatus
from inferq.metrics import CACHE_LOOKUPS
from inferq.queue.events import dump_event
from inferq.queue.names import CACHE_L2_CHANNEL, event_log_key
from inferq.settings import Settings

log = logging.getLogger(__name__)

HEADER = "x-inferq-cache"

# A hit's replay log, with its TTL, in one atomic command (RPUSH in slices: Lua's unpack has
# a stack limit, and an answer can have thousands of pieces).
_REPLAY = """
for i = 2, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""


@dataclass
class CacheLookup:
    """The outcome of a lookup; `marker` goes on the job record, and through `cache_header`
    on the response."""

    policy: CachePolicy
    scope: CacheScope | None
    started: float = field(default_factory=time.perf_counter)
    answer: CachedAnswer | None = None
    marker: str | None = None
    vector: Vector | None = None
    truncated: bool = False  # a compacted prompt is not eligible for L2
    # The id of the L2 row to write once the job is queued (its vector not computed yet).
    later_entry: uuid.UUID | None = None

    @property
    def hit(self) -> bool:
        return self.answer is not None


def cache_header(job: Job) -> str:
    """The x-inferq-cache value of a job: its hit marker, else `miss`."""
    return job.cache if job.cache and job.cache.startswith("hit-") else "miss"


class CacheService:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
    ):
        self.settings = settings
        self.redis = client
        self.exact = ExactCache(client)
        self.index = SemanticIndex(
            settings.cache_semantic_exact_max, settings.cache_semantic_probes
        )
        self.embedder: SemanticEmbedder | None = None
        self.sync = IndexSync(client, sessions, self.index, settings.cache_resync_s)
        self.sessions = sessions
        self.store = CacheStore(client, sessions, self.index)
        self._replay = client.register_script(_REPLAY)
        self._later: set[asyncio.Task[None]] = set()

    async def start(self, embedder: TextEmbedder | None) -> None:
        """Build the L2 index and follow its changes; L2 stays off without an embedder."""
        if embedder is None or not (
            self.settings.cache_enabled and self.settings.cache_semantic_enabled
        ):
            log.info("semantic cache off (no embedder, or disabled)")
            return
        self.embedder = SemanticEmbedder(embedder)
        await self.sync.start()

    async def stop(self) -> None:
        if self._later:  # rows of jobs already queued: a few ms each
            await asyncio.wait(self._later, timeout=5.0)
        if self.embedder is not None:
            await self.sync.stop()

    async def lookup(
        self,
        spec: ModelSpec,
        prompt: str,
        messages: list[dict[str, Any]] | None,
        params: dict[str, Any],
        *,
        truncated: bool = False,
        mode: CacheMode | None = None,
        ttl: int | None = None,
        cache_control: str | None = None,
        semantic: bool = False,
    ) -> CacheLookup:
        """L1 (one Redis round trip); with `semantic`, then L2 after a miss, which can also be
        asked for later with `lookup_semantic` (the API does, after admission).

        `params` are the output-changing parameters the worker will use.
        """
        policy = policy_of(self.settings, mode, ttl, cache_control)
        if not policy.active:
            return CacheLookup(policy, None)
        scope = build_scope(current_tenant(), model_version(spec), prompt, messages, params)
        result = CacheLookup(
            policy, scope, marker="miss" if policy.lookup_exact else "bypass", truncated=truncated
        )
        if policy.lookup_exact:
            result.answer = await self.exact.get(scope.answer_key, scope.tenant)
            CACHE_LOOKUPS.labels("exact", "hit" if result.hit else "miss").inc()
            if result.hit:
                result.marker = "hit-exact"
        if semantic:
            await self.lookup_semantic(result)
        return result

    async def lookup_semantic(self, result: CacheLookup) -> None:
        """L2 after an L1 miss; it also embeds the prompt that a fill will store."""
        scope, policy = result.scope, result.policy
        if result.hit or scope is None or not (policy.store_semantic or policy.lookup_semantic):
            return
        embedder = self.embedder
        text = scope.semantic_text
        if result.truncated or embedder is None or not embedder.ready or text is None:
            CACHE_LOOKUPS.labels("semantic", "ineligible").inc()
            return
        # Nothing to find: the vector is only for the row a fill will store, so it can wait
        # until the job is queued. A long text is counted first, and may not be eligible.
        nothing_to_find = not policy.lookup_semantic or not self.index.has(scope.partition)
        if nothing_to_find and embedder.surely_fits(text):
            if policy.lookup_semantic:
                CACHE_LOOKUPS.labels("semantic", "miss").inc()
            if policy.store_semantic:
                result.later_entry = uuid.uuid4()
            return
        result.vector = await embedder.embed(text)
        if result.vector is None:  # longer than the embedder's window
            CACHE_LOOKUPS.labels("semantic", "ineligible").inc()
            return
        if not result.policy.lookup_semantic:
            return
        threshold = self.settings.cache_semantic_threshold
        match = self.index.search(scope.partition, result.vector, threshold)
        if match is not None and not compatible(text, match.entry.prompt):
            match = None  # close in meaning, but the words that differ change the question
        answer = await self._answer_of(match, scope.tenant)
        CACHE_LOOKUPS.labels("semantic", "hit" if answer else "miss").inc()
        if answer is not None and match is not None:
            result.answer = answer
            result.marker = f"hit-semantic; similarity={match.similarity:.3f}"

    async def _answer_of(self, match: Match | None, tenant: str) -> CachedAnswer | None:
        answer = await self.store.semantic_answer(match, tenant)
        if match is not None and answer is None:
            self.index.remove(match.entry.id)  # its L1 answer expired, was trimmed or purged
        return answer

    async def attach(self, session: AsyncSession, lookup: CacheLookup, job: Job) -> None:
        """Make `job` the hit, or prepare it (and its L2 row) for filling on completion."""
        job.cache = lookup.marker
        if lookup.answer is not None:
            _complete_with(job, lookup.answer, lookup.started)
            return
        scope, policy = lookup.scope, lookup.policy
        if scope is None or not policy.store_exact:
            return
        fill: dict[str, Any] = {
            "key": scope.answer_key,
            "ttl": policy.ttl_s,
            "tenant": scope.tenant,
        }
        if policy.store_semantic and lookup.vector is not None and scope.semantic_text:
            entry = _entry(scope, scope.semantic_text, lookup.vector, job.id, policy.ttl_s)
            session.add(entry)
            fill["entry"] = str(entry.id)
        elif lookup.later_entry is not None:
            fill["entry"] = str(lookup.later_entry)
        job.params = {**job.params, "cache": fill}

    def store_entry_later(self, lookup: CacheLookup, job: Job) -> asyncio.Task[None] | None:
        """Embed a queued miss's prompt and write the L2 row `attach` named, in the background.

        The worker announces the row when it fills the answer; if it got there first, its
        announcement found no row, so this announces it again (loading is idempotent).
        """
        if lookup.later_entry is None or lookup.scope is None:
            return None
        return spawn(
            self._later,
            self._store_entry(lookup.scope, lookup.later_entry, job.id, lookup.policy.ttl_s),
            name="inferq-cache-entry",
        )

    async def _store_entry(
        self, scope: CacheScope, entry_id: uuid.UUID, job_id: uuid.UUID, ttl_s: int
    ) -> None:
        try:
            embedder, text = self.embedder, scope.semantic_text
            vector = await embedder.embed(text) if embedder and text else None
            if vector is None or text is None:  # longer than the embedder's window
                return
            async with self.sessions() as session:
                session.add(_entry(scope, text, vector, job_id, ttl_s, entry_id))
                await session.commit()
            if await self.redis.exists(scope.answer_key):
                await self.redis.publish(CACHE_L2_CHANNEL, change_message("add", id=str(entry_id)))
        except Exception:  # the job is queued either way; only its L2 entry is lost
            log.exception("L2 entry not stored", extra={"entry": str(entry_id)})

    async def replay(self, job: Job, lookup: CacheLookup) -> None:
        """Write a hit's events (tokens, then `end`) into its replay log, in one script.

        The request that asked reads them from memory (`answered_events`); the log serves
        whoever reads the job's events later.
        """
        pieces = lookup.answer.pieces if lookup.answer is not None else []
        events: list[dict[str, Any]] = [
            {"seq": seq, "type": "token", "text": text} for seq, text in enumerate(pieces)
        ]
        end = {"finish_reason": job.finish_reason, "usage": job.usage, "timings": job.timings}
        end["cache"] = job.cache  # the one difference from a generated end: surfaces show it
        events.append({"seq": len(events), "type": "end", **end})
        encoded = [dump_event(event) for event in events]
        await self._replay(
            keys=[event_log_key(str(job.id))], args=[self.settings.event_log_ttl_s, *encoded]
        )
        _answered[job] = events


# A hit's events by the job object its request holds: that request streams or collects them
# without reading back the log it has just written (a fifth of a hit's CPU went to that).
_answered: weakref.WeakKeyDictionary[Job, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def answered_events(job: Job) -> list[dict[str, Any]] | None:
    """The events of a hit this process answered as `job`, else None."""
    return _answered.get(job)


def _complete_with(job: Job, answer: CachedAnswer, started: float) -> None:
    now = datetime.now(UTC)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    completion = int(answer.usage.get("completion_tokens", 0))
    job.status = JobStatus.COMPLETED.value
    job.output = answer.text
    job.finish_reason = answer.finish_reason
    job.usage = {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    }
    job.timings = {"queue_ms": 0.0, "ttft_ms": elapsed_ms, "tpot_ms": None, "total_ms": elapsed_ms}
    job.started_at = job.finished_at = now
    job.params = {**job.params, "cache": {"source_job": answer.source_job}}


def _entry(
    scope: CacheScope,
    text: str,
    vector: Vector,
    job_id: uuid.UUID,
    ttl_s: int,
    entry_id: uuid.UUID | None = None,
) -> CacheEntry:
    return CacheEntry(
        id=entry_id or uuid.uuid4(),
        tenant=scope.tenant,
        model=scope.model,
        context_hash=scope.context_hash,
        params_hash=scope.params_hash,
        prompt=text,
        embedding=vector.astype("<f4").tobytes(),
        answer_key=scope.answer_key,
        job_id=job_id,
        expires_at=entry_expiry(ttl_s),
    )
