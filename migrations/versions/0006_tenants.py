"""tenants, API keys, jobs.tenant_id and jobs.webhook_url, webhook deliveries (outbox)

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None

# The outbox: a job with a webhook_url that reaches a final state gets exactly one delivery
# row, in the same transaction as the write that ended it, whoever wrote it (a worker, the
# API's cancel, the reconciler, a cache hit inserted already completed).
ENQUEUE_WEBHOOK_FUNCTION = """
CREATE FUNCTION inferq_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.webhook_url IS NOT NULL
       AND NEW.status IN ('completed', 'failed', 'cancelled')
       AND (TG_OP = 'INSERT' OR OLD.status NOT IN ('completed', 'failed', 'cancelled')) THEN
        INSERT INTO webhook_deliveries (id, job_id, tenant_id, url, status, attempts,
                                        next_attempt_at, created_at, log)
        VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.tenant_id,
                NEW.webhook_url, 'pending', 0, now(), now(), '[]'::jsonb);
        PERFORM pg_notify('inferq_webhooks', NEW.id::text);
    END IF;
    RETURN NEW;
END;
$$
"""
ENQUEUE_WEBHOOK_TRIGGER = """
CREATE TRIGGER jobs_enqueue_webhook
AFTER INSERT OR UPDATE OF status ON jobs
FOR EACH ROW EXECUTE FUNCTION inferq_enqueue_webhook();
"""


def _ts(name: str, nullable: bool = True, now: bool = False) -> sa.Column[object]:
    default = sa.func.now() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("webhook_secret", sa.String(128), nullable=False),
        _ts("created_at", nullable=False, now=True),
        _ts("disabled_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("scopes", postgresql.ARRAY(sa.String(32)), nullable=False),
        _ts("created_at", nullable=False, now=True),
        _ts("expires_at"),
        _ts("revoked_at"),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens_per_minute", sa.Integer(), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _ts("next_attempt_at", nullable=False),
        _ts("created_at", nullable=False, now=True),
        _ts("delivered_at"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("log", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )  # fmt: skip
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.add_column("jobs", sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column("jobs", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.create_index("ix_jobs_tenant_id_created_at", "jobs", ["tenant_id", "created_at"])
    op.execute(ENQUEUE_WEBHOOK_FUNCTION)
    op.execute(ENQUEUE_WEBHOOK_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_enqueue_webhook ON jobs")
    op.execute("DROP FUNCTION IF EXISTS inferq_enqueue_webhook()")
    op.drop_index("ix_jobs_tenant_id_created_at", table_name="jobs")
    op.drop_column("jobs", "webhook_url")
    op.drop_column("jobs", "tenant_id")
    op.drop_table("webhook_deliveries")
    op.drop_table("api_keys")
    op.drop_table("tenants")
