"""chat sessions and messages, compaction columns on jobs, the reply trigger, analyst views

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

# When a job linked to a pending assistant message ends, its output becomes the message.
# This runs inside the worker's final write, so the reply is stored with nobody listening
# and even if the API process is gone. A cancelled job leaves a partial message.
STORE_REPLY_FUNCTION = """
CREATE FUNCTION inferq_store_chat_reply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH stored AS (
        UPDATE chat_messages SET
            content = COALESCE(NEW.output, ''),
            status = CASE NEW.status
                WHEN 'completed' THEN 'complete'
                WHEN 'cancelled' THEN 'partial'
                ELSE 'failed' END,
            finish_reason = NEW.finish_reason,
            tokens = (NEW.usage ->> 'completion_tokens')::int,
            error = NEW.error,
            finished_at = COALESCE(NEW.finished_at, now())
        WHERE job_id = NEW.id AND status = 'pending'
        RETURNING session_id
    )
    UPDATE chat_sessions SET updated_at = now() WHERE id IN (SELECT session_id FROM stored);
    RETURN NULL;
END
$$;
"""

STORE_REPLY_TRIGGER = """
CREATE TRIGGER jobs_store_chat_reply
AFTER UPDATE OF status ON jobs
FOR EACH ROW
WHEN (NEW.status IN ('completed', 'cancelled', 'failed') AND OLD.status <> NEW.status)
EXECUTE FUNCTION inferq_store_chat_reply();
"""

CHAT_TURNS_VIEW = """
CREATE VIEW chat_turns AS
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
    m.cache,
    m.created_at,
    m.finished_at
FROM chat_messages m
JOIN chat_sessions s ON s.id = m.session_id
LEFT JOIN jobs j ON j.id = m.job_id
WHERE m.role = 'assistant';
"""

SESSION_STATS_VIEW = """
CREATE VIEW chat_session_stats AS
SELECT
    s.id AS session_id,
    s.tenant_id,
    s.title,
    s.model,
    s.created_at,
    s.updated_at,
    COALESCE(msg.messages, 0) AS messages,
    COALESCE(msg.user_messages, 0) AS user_messages,
    COALESCE(t.turns, 0) AS assistant_messages,
    COALESCE(t.partial_replies, 0) AS partial_replies,
    COALESCE(t.failed_replies, 0) AS failed_replies,
    COALESCE(t.prompt_tokens, 0) AS prompt_tokens,
    COALESCE(t.completion_tokens, 0) AS completion_tokens,
    COALESCE(t.truncated_turns, 0) AS truncated_turns,
    COALESCE(t.cache_hits, 0) AS cache_hits,
    t.avg_ttft_ms,
    t.p95_ttft_ms,
    t.avg_total_ms,
    t.models
FROM chat_sessions s
LEFT JOIN (
    SELECT session_id,
           count(*) AS messages,
           count(*) FILTER (WHERE role = 'user') AS user_messages
    FROM chat_messages GROUP BY session_id
) msg ON msg.session_id = s.id
LEFT JOIN (
    SELECT session_id,
           count(*) AS turns,
           count(*) FILTER (WHERE status = 'partial') AS partial_replies,
           count(*) FILTER (WHERE status = 'failed') AS failed_replies,
           sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens,
           count(*) FILTER (WHERE prompt_truncated) AS truncated_turns,
           count(*) FILTER (WHERE cache = 'hit') AS cache_hits,
           avg(ttft_ms) AS avg_ttft_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS p95_ttft_ms,
           avg(total_ms) AS avg_total_ms,
           array_agg(DISTINCT model) AS models
    FROM chat_turns GROUP BY session_id
) t ON t.session_id = s.id;
"""

DAILY_USAGE_VIEW = """
CREATE VIEW chat_daily_usage AS
SELECT
    date_trunc('day', created_at) AS day,
    model,
    count(DISTINCT session_id) AS sessions,
    count(*) AS turns,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    count(*) FILTER (WHERE prompt_truncated) AS truncated_turns,
    count(*) FILTER (WHERE cache = 'hit') AS cache_hits,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS p50_ttft_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS p95_ttft_ms,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms) AS p50_total_ms
FROM chat_turns
GROUP BY 1, 2;
"""


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("prompt_truncated", sa.Boolean(), server_default="false", nullable=False),
    )
    op.add_column("jobs", sa.Column("original_prompt_tokens", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("effective_prompt_tokens", sa.Integer(), nullable=True))
    _create_sessions()
    _create_messages()
    op.execute(STORE_REPLY_FUNCTION)
    op.execute(STORE_REPLY_TRIGGER)
    for view in (CHAT_TURNS_VIEW, SESSION_STATS_VIEW, DAILY_USAGE_VIEW):
        op.execute(view)


def _create_sessions() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_sessions")),
    )
    op.create_index("ix_chat_sessions_created_at_id", "chat_sessions", ["created_at", "id"])
    op.create_index(
        "ix_chat_sessions_tenant_id_created_at", "chat_sessions", ["tenant_id", "created_at"]
    )


def _create_messages() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("session_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=True),
        sa.Column("finish_reason", sa.String(20), nullable=True),
        sa.Column("error", postgresql.JSONB(), nullable=True),
        sa.Column("cache", sa.String(10), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "content_tsv",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english', content)", persisted=True),
            nullable=True,
        ),
        sa.CheckConstraint(
            "role IN ('system', 'user', 'assistant')", name=op.f("ck_chat_messages_role_valid")
        ),
        sa.CheckConstraint(
            "status IN ('complete', 'pending', 'partial', 'failed')",
            name=op.f("ck_chat_messages_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_chat_messages_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint(
            "session_id", "position", name=op.f("uq_chat_messages_session_position")
        ),
    )
    op.create_index("ix_chat_messages_job_id", "chat_messages", ["job_id"])
    op.create_index(
        "ix_chat_messages_content_tsv", "chat_messages", ["content_tsv"], postgresql_using="gin"
    )


def downgrade() -> None:
    for view in ("chat_daily_usage", "chat_session_stats", "chat_turns"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP TRIGGER IF EXISTS jobs_store_chat_reply ON jobs")
    op.execute("DROP FUNCTION IF EXISTS inferq_store_chat_reply()")
    op.drop_table("chat_messages")
    op.drop_table("chat_sessions")
    for column in ("effective_prompt_tokens", "original_prompt_tokens", "prompt_truncated"):
        op.drop_column("jobs", column)
