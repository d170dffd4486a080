"""operator session version (logout ends sessions on the server)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN (SQLite has both since 3.35): a batch operation would rebuild the
# table from its reflection, which cannot see the expression index on lower(email).


def upgrade() -> None:
    op.add_column(
        "operators",
        sa.Column("session_version", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("operators", "session_version")
