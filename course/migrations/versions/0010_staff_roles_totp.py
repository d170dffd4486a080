"""staff roles, two-factor sign-in (TOTP) and the audit log

Every operator account of before becomes an owner (nothing they could do is taken away);
the column's database default is the least role, "assistant", for rows written by hand.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Plain ADD/DROP COLUMN (see 0006): a batch operation would rebuild "operators" from its
# reflection, which cannot see the expression index on lower(email).
_OPERATOR_COLUMNS = (
    ("totp_secret", sa.Text()),
    ("totp_enabled_at", sa.DateTime(timezone=True)),
    ("totp_last_step", sa.Integer()),
    ("recovery_codes", sa.Text()),
)


def upgrade() -> None:
    op.add_column(
        "operators",
        sa.Column("role", sa.String(length=16), nullable=False, server_default="assistant"),
    )
    op.execute(sa.text("UPDATE operators SET role = 'owner'"))
    for name, type_ in _OPERATOR_COLUMNS:
        op.add_column("operators", sa.Column(name, type_, nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_audit_log_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_operator_id", "audit_log", ["operator_id"], unique=False)
    op.create_index("ix_audit_log_subscriber_id", "audit_log", ["subscriber_id"], unique=False)
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_index("ix_audit_log_subscriber_id", table_name="audit_log")
    op.drop_index("ix_audit_log_operator_id", table_name="audit_log")
    op.drop_table("audit_log")
    for name, _type in reversed(_OPERATOR_COLUMNS):
        op.drop_column("operators", name)
    op.drop_column("operators", "role")
