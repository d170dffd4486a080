"""when a delivery failed (for health checks and the dashboard)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    # Failures from before this column: the best known time is when the retries began.
    op.execute(
        "UPDATE deliveries SET failed_at = COALESCE(first_failed_at, created_at) "
        "WHERE status = 'failed'"
    )
    op.create_index(
        "ix_deliveries_failed_at",
        "deliveries",
        ["failed_at"],
        postgresql_where=sa.text("status = 'failed'"),
        sqlite_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_failed_at", table_name="deliveries")
    op.drop_column("deliveries", "failed_at")  # plain DROP COLUMN: see 0006
