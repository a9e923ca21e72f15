"""merge the feature branches of the schema into one head

The request fields (0002), sessions (0003), caches (0005), tenants (0006) and the model
registry (0007) were built in parallel, each on top of 0001; this revision joins them so
that `alembic upgrade head` has one head again.

Revision ID: 0008
Revises: 0002, 0003, 0005, 0006, 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

revision = "0008"
down_revision = ("0002", "0003", "0005", "0006", "0007")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
