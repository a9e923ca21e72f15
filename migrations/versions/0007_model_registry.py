"""model registry: model_versions, traffic_policies, and the route of each job

Revision ID: 0007
Revises: 0001
Create Date: 2026-11-27

The catalog's models are seeded as version 1.0.0 by the API on first use (inferq.registry
.service), not here: their weights paths follow the running Settings.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0001"
branch_labels = None
depends_on = None

_NOW = sa.func.now()


def upgrade() -> None:
    op.add_column("jobs", sa.Column("model_version", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("queue", sa.String(300), nullable=True))
    op.add_column("jobs", sa.Column("route", postgresql.JSONB(), nullable=True))
    # The breaker watcher reads finished jobs in order of their end.
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_table(
        "model_versions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(50), nullable=False),
        sa.Column("weights", sa.Text(), nullable=True),
        sa.Column("context_length", sa.Integer(), nullable=False),
        sa.Column("sampling", postgresql.JSONB(), nullable=False),
        sa.Column("tags", postgresql.JSONB(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("performance", postgresql.JSONB(), nullable=False),
        sa.Column("fallback", sa.String(264), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('registered', 'active', 'retired')",
            name=op.f("ck_model_versions_state_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index(
        "uq_model_versions_name_version", "model_versions", ["name", "version"], unique=True
    )
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["name"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_table(
        "traffic_policies",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("candidate", sa.String(64), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("sticky", sa.String(20), nullable=False),
        sa.Column("history", postgresql.JSONB(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('ab', 'canary', 'blue_green')", name=op.f("ck_traffic_policies_kind_valid")
        ),
        sa.CheckConstraint(
            "share >= 0 AND share <= 1", name=op.f("ck_traffic_policies_share_valid")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_policies")),
    )
    op.create_index(
        "uq_traffic_policies_one_running",
        "traffic_policies",
        ["model"],
        unique=True,
        postgresql_where=sa.text("stopped_at IS NULL"),
    )
    op.create_index("ix_jobs_route_policy", "jobs", [sa.text("(route->>'policy')")])


def downgrade() -> None:
    op.drop_index("ix_jobs_route_policy", table_name="jobs")
    op.drop_table("traffic_policies")
    op.drop_table("model_versions")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_column("jobs", "route")
    op.drop_column("jobs", "queue")
    op.drop_column("jobs", "model_version")
