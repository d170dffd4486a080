"""an index for the hourly purge of unconfirmed signups

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Partial and on an expression: only pending rows, by coalesce(confirm_sent_at,
    # created_at), exactly as course.privacy.purge_pending asks.
    op.create_index(
        "ix_subscribers_pending_since",
        "subscribers",
        [sa.text("coalesce(confirm_sent_at, created_at)")],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_subscribers_pending_since", table_name="subscribers")
