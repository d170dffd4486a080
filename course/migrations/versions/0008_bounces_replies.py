"""bounces and replies after sending: soft bounce count, replies, handled inbound messages

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscribers",
        sa.Column("soft_bounces", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "replies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("lesson", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_replies_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replies")),
    )
    op.create_index("ix_replies_subscriber_id", "replies", ["subscriber_id"], unique=False)
    op.create_table(
        "inbound_messages",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("mailbox_id", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_inbound_messages")),
    )
    op.create_index(
        "ix_inbound_messages_created_at", "inbound_messages", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_created_at", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("ix_replies_subscriber_id", table_name="replies")
    op.drop_table("replies")
    op.drop_column("subscribers", "soft_bounces")
