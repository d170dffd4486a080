"""operator language (the admin in the staff member's chosen language)

Revision ID: 0014_operator_language
Revises: 0013_bookings
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_operator_language"
down_revision = "0013_bookings"
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN, as in 0006: a batch operation would rebuild the table from its
# reflection, which cannot see the expression index on lower(email). NULL: not chosen yet
# (English, the engine's default language).


def upgrade() -> None:
    op.add_column("operators", sa.Column("language", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("operators", "language")
