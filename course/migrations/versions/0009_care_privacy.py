"""care and privacy: country, consent record, anonymisation, risk marks, care alerts

Notes and replies become encrypted at rest (course/crypto.py). The columns stay text: values
written before are read as they are until `course keys rotate` encrypts them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Plain ADD/DROP COLUMN (see 0006): no table is rebuilt.
_SUBSCRIBER_COLUMNS = (
    ("country", sa.String(length=2)),
    ("consent_source", sa.String(length=32)),
    ("consent_origin", sa.String(length=120)),
    ("consent_text_hash", sa.String(length=64)),
    ("anonymized_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, type_ in _SUBSCRIBER_COLUMNS:
        op.add_column("subscribers", sa.Column(name, type_, nullable=True))
    op.add_column("signup_requests", sa.Column("consent_source", sa.String(32), nullable=True))
    op.add_column("signup_requests", sa.Column("consent_origin", sa.String(120), nullable=True))
    op.add_column("signup_requests", sa.Column("consent_text_hash", sa.String(64), nullable=True))
    op.add_column("lesson_progress", sa.Column("risk", sa.String(length=200), nullable=True))
    op.add_column("replies", sa.Column("risk", sa.String(length=200), nullable=True))
    # Encrypted subjects are longer than the 300 characters a plain one had.
    with op.batch_alter_table("replies", schema=None, reflect_kwargs={"resolve_fks": False}) as b:
        b.alter_column("subject", type_=sa.Text(), existing_type=sa.String(length=300))
    op.create_table(
        "consent_texts",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_consent_texts")),
    )
    op.create_table(
        "care_marks",
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("item", name=op.f("pk_care_marks")),
    )
    op.create_table(
        "care_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_alerts")),
    )
    op.create_index("ix_care_alerts_created_at", "care_alerts", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_care_alerts_created_at", table_name="care_alerts")
    op.drop_table("care_alerts")
    op.drop_table("care_marks")
    op.drop_table("consent_texts")
    with op.batch_alter_table("replies", schema=None, reflect_kwargs={"resolve_fks": False}) as b:
        b.alter_column("subject", type_=sa.String(length=300), existing_type=sa.Text())
    op.drop_column("replies", "risk")
    op.drop_column("lesson_progress", "risk")
    for name in ("consent_text_hash", "consent_origin", "consent_source"):
        op.drop_column("signup_requests", name)
    for name, _type in reversed(_SUBSCRIBER_COLUMNS):
        op.drop_column("subscribers", name)
