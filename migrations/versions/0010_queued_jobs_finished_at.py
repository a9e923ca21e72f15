"""an index of finished jobs that went through a queue, for the breaker watcher

The watcher reads, twice a second, the jobs that ended since its cursor and went through a
worker's queue. By ix_jobs_finished_at that range held every cache hit too (a hit has a
`finished_at` and no queue), and the cursor moves only when a queued job ends: on the bench
database, 18,014 hits since the last generation were read and dropped per tick, 14 ms of a
PostgreSQL backend twice a second, growing with every hit. This partial index holds only the
queued jobs; the same query takes 0.06 ms on it, statistics or none (autovacuum is off on
this project's machines, docs/benchmarks.md).

Built CONCURRENTLY, outside the migration's transaction, so a live API keeps writing jobs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_queue_finished_at",
            "jobs",
            ["finished_at"],
            postgresql_where=sa.text("queue IS NOT NULL"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_jobs_queue_finished_at",
            table_name="jobs",
            postgresql_concurrently=True,
            if_exists=True,
        )
