"""Fill L2 with decoy entries so a lookup searches a realistic index (100,000 entries).

Decoys are random unit vectors (cosine near 0 with any real prompt, so they never answer)
in the same partition as a real entry, pointing at that entry's answer and job. The API
picks them up on its periodic re-read (INFERQ_CACHE_RESYNC_S), which loads the entries of
jobs finished since the last one: bumping the job's `finished_at` brings them all in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
import numpy as np

from inferq.db.session import asyncpg_dsn

DIMENSIONS = 384
SEED_PREFIX = "bench-seed "
_COLUMNS = [
    "id",
    "tenant",
    "model",
    "context_hash",
    "params_hash",
    "prompt",
    "embedding",
    "answer_key",
    "job_id",
    "created_at",
    "expires_at",
]


async def seed_decoys(database_url: str, like_prompt: str, count: int) -> int:
    """Insert `count` decoys beside the newest entry for `like_prompt`; returns how many."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT tenant, model, context_hash, params_hash, answer_key, job_id"
            " FROM cache_entries WHERE prompt = $1 ORDER BY created_at DESC LIMIT 1",
            like_prompt,
        )
        if row is None:
            raise RuntimeError(f"no L2 entry for {like_prompt!r} to seed beside")
        vectors = np.random.default_rng(11).standard_normal((count, DIMENSIONS), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        now = datetime.now(UTC)
        expires = now + timedelta(hours=6)
        fixed = (row["tenant"], row["model"], row["context_hash"], row["params_hash"])
        records = [
            (
                uuid.uuid4(),
                *fixed,
                f"{SEED_PREFIX}{i}",
                vectors[i].astype("<f4").tobytes(),
                row["answer_key"],
                row["job_id"],
                now,
                expires,
            )
            for i in range(count)
        ]
        await conn.copy_records_to_table("cache_entries", records=records, columns=_COLUMNS)
        await conn.execute("UPDATE jobs SET finished_at = now() WHERE id = $1", row["job_id"])
        return count
    finally:
        await conn.close()


async def delete_decoys(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        status = await conn.execute(
            "DELETE FROM cache_entries WHERE prompt LIKE $1", SEED_PREFIX + "%"
        )
        return int(status.split()[-1])
    finally:
        await conn.close()
