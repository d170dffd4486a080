"""bookings reported by the practice's booking system (Cal.com, Calendly, generic webhook)

Revision ID: 0013_bookings
Revises: 0012
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_bookings"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("course_id", sa.Integer(), nullable=True),
        sa.Column("lesson", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_bookings_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
        # One row per booking at its provider: a retried webhook finds it and adds nothing.
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_bookings_source")),
    )
    op.create_index("ix_bookings_subscriber_id", "bookings", ["subscriber_id"], unique=False)
    op.create_index("ix_bookings_course_id", "bookings", ["course_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bookings_course_id", table_name="bookings")
    op.drop_index("ix_bookings_subscriber_id", table_name="bookings")
    op.drop_table("bookings")
