"""request fields on jobs: request id, end user, idempotency key, choice group

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("request_id", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("end_user", sa.String(256), nullable=True))
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(256), nullable=True))
    op.add_column("jobs", sa.Column("group_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column("jobs", sa.Column("choice_index", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_request_id", "jobs", ["request_id"])
    op.create_index("ix_jobs_group_id", "jobs", ["group_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_group_id", table_name="jobs")
    op.drop_index("ix_jobs_request_id", table_name="jobs")
    for column in ("choice_index", "group_id", "idempotency_key", "end_user", "request_id"):
        op.drop_column("jobs", column)
