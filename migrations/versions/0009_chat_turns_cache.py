"""chat_turns reads a turn's cache outcome from its job

0003 read `chat_messages.cache`, which nothing writes, and counted `cache = 'hit'`, while a job
is marked `hit-exact`, `hit-semantic; similarity=…`, `miss` or `bypass`: every cache_hits
figure in the analyst views was 0. `cache` is now `hit`, `miss` or null (the cache was not
asked), from the job; the new last column `cache_layer` says which layer answered.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Same columns as 0003's view (a replaced view keeps its columns' names and types), plus one.
CHAT_TURNS_VIEW = """
CREATE OR REPLACE VIEW chat_turns AS
SELECT
    m.session_id,
    s.tenant_id,
    m.id AS message_id,
    m.position,
    m.job_id,
    COALESCE(m.model, j.model) AS model,
    m.status,
    m.finish_reason,
    j.prompt_tokens,
    j.original_prompt_tokens,
    j.effective_prompt_tokens,
    COALESCE(j.prompt_truncated, false) AS prompt_truncated,
    (j.usage ->> 'completion_tokens')::int AS completion_tokens,
    (j.timings ->> 'queue_ms')::float8 AS queue_ms,
    (j.timings ->> 'ttft_ms')::float8 AS ttft_ms,
    (j.timings ->> 'tpot_ms')::float8 AS tpot_ms,
    (j.timings ->> 'total_ms')::float8 AS total_ms,
    CAST(CASE WHEN j.cache LIKE 'hit-%' THEN 'hit'
              WHEN j.cache = 'miss' THEN 'miss' END AS varchar(10)) AS cache,
    m.created_at,
    m.finished_at,
    CASE WHEN j.cache LIKE 'hit-exact%' THEN 'exact'
         WHEN j.cache LIKE 'hit-semantic%' THEN 'semantic' END AS cache_layer
FROM chat_messages m
JOIN chat_sessions s ON s.id = m.session_id
LEFT JOIN jobs j ON j.id = m.job_id
WHERE m.role = 'assistant';
"""


def upgrade() -> None:
    op.execute(CHAT_TURNS_VIEW)


def downgrade() -> None:
    # A view cannot lose a column in place: rebuild 0003's three views.
    views = _revision_0003()
    op.execute("DROP VIEW chat_turns CASCADE")
    for view in (views.CHAT_TURNS_VIEW, views.SESSION_STATS_VIEW, views.DAILY_USAGE_VIEW):
        op.execute(view)


def _revision_0003() -> ModuleType:
    path = Path(__file__).with_name("0003_sessions.py")
    spec = importlib.util.spec_from_file_location("inferq_migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
