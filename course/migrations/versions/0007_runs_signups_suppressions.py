"""runs of the course, signup requests, mailboxes and the opt-out list

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _mailbox(address: str) -> str:
    # A frozen copy of course.mailboxes.mailbox as of this migration: migrations must not
    # change meaning when the app's code changes later.
    local, _, domain = address.strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    domain = {"googlemail.com": "gmail.com"}.get(domain, domain)
    local = local.lower()
    if "+" in local[1:]:
        local = local[: local.index("+", 1)]
    if domain == "gmail.com":
        local = local.replace(".", "")
    return f"{local}@{domain}"


def _partial_indexes(create: bool) -> None:
    """The partial indexes of deliveries, dropped around the table's rebuild on SQLite
    (a rebuilt copy would lose their WHERE clause) and created again after it."""
    for name, column, status in (
        ("ix_deliveries_queued_due", "due_at", "queued"),
        ("ix_deliveries_failed_at", "failed_at", "failed"),
    ):
        if create:
            op.create_index(
                name,
                "deliveries",
                [column],
                postgresql_where=sa.text(f"status = '{status}'"),
                sqlite_where=sa.text(f"status = '{status}'"),
            )
        else:
            op.drop_index(name, table_name="deliveries")


#: Rebuilding a table on SQLite reflects it; its foreign key to subscribers must not make
#: Alembic reflect subscribers too (whose expression index cannot be reflected).
_REFLECT = {"resolve_fks": False}


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch operation would rebuild the table from its
    # reflection, which cannot see the expression index on lower(email).
    op.add_column(
        "subscribers",
        sa.Column("mailbox", sa.String(length=320), nullable=False, server_default=""),
    )
    op.add_column("subscribers", sa.Column("run", sa.Integer(), nullable=False, server_default="1"))
    conn = op.get_bind()
    subscribers = sa.table(
        "subscribers", sa.column("id", sa.Integer), sa.column("email"), sa.column("mailbox")
    )
    rows = conn.execute(sa.select(subscribers.c.id, subscribers.c.email)).all()
    for row_id, email in rows:
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == row_id)
            .values(mailbox=_mailbox(email or ""))
        )
    op.create_index("ix_subscribers_mailbox", "subscribers", ["mailbox"], unique=False)

    _partial_indexes(create=False)
    with op.batch_alter_table("deliveries", schema=None, reflect_kwargs=_REFLECT) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column("unacknowledged", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.drop_constraint("uq_deliveries_subscriber_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_deliveries_subscriber_id", ["subscriber_id", "kind", "number", "run"]
        )
    _partial_indexes(create=True)
    with op.batch_alter_table("lesson_progress", schema=None, reflect_kwargs=_REFLECT) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), nullable=False, server_default="1"))
        batch_op.drop_constraint("uq_lesson_progress_subscriber_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_lesson_progress_subscriber_id", ["subscriber_id", "lesson", "run"]
        )

    op.create_table(
        "signup_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_requests")),
    )
    op.create_index(
        "ix_signup_requests_created_at", "signup_requests", ["created_at"], unique=False
    )
    op.create_table(
        "suppressions",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_suppressions")),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_signup_requests_created_at", table_name="signup_requests")
    op.drop_table("signup_requests")
    with op.batch_alter_table("lesson_progress", schema=None, reflect_kwargs=_REFLECT) as batch_op:
        batch_op.drop_constraint("uq_lesson_progress_subscriber_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_lesson_progress_subscriber_id", ["subscriber_id", "lesson"]
        )
        batch_op.drop_column("run")
    _partial_indexes(create=False)
    with op.batch_alter_table("deliveries", schema=None, reflect_kwargs=_REFLECT) as batch_op:
        batch_op.drop_constraint("uq_deliveries_subscriber_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_deliveries_subscriber_id", ["subscriber_id", "kind", "number"]
        )
        batch_op.drop_column("unacknowledged")
        batch_op.drop_column("run")
    _partial_indexes(create=True)
    op.drop_index("ix_subscribers_mailbox", table_name="subscribers")
    op.drop_column("subscribers", "run")
    op.drop_column("subscribers", "mailbox")
