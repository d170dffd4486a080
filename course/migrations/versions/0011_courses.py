"""several courses: courses, their versions, and a course on every subscriber

The course that existed before becomes course 1, published. Every subscriber, delivery,
check-in, note and event stays exactly as it was and belongs to it: subscribers and events
get ``course_id = 1``; deliveries and progress belong to their subscriber. Lesson numbers
were days 1-5; they become the lessons' keys (stable ids), with the same values.

The content of course 1 is not written here: `course db upgrade` (course.db.upgrade) then
imports the lesson folder (the shipped course, or COURSE_LESSONS_DIR) as its first version,
so this migration never depends on lesson files.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "courses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("booking_url", sa.String(length=2000), nullable=True),
        sa.Column("send_hour", sa.Integer(), nullable=True),
        sa.Column("weekdays_only", sa.Boolean(), nullable=False),
        sa.Column("published_version_id", sa.Integer(), nullable=True),
        sa.Column("draft", sa.Text(), nullable=True),
        sa.Column("draft_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_courses")),
        sa.UniqueConstraint("slug", name=op.f("uq_courses_slug")),
    )
    op.create_table(
        "course_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=320), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["course_id"], ["courses.id"], name=op.f("fk_course_versions_course_id_courses")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_course_versions")),
        sa.UniqueConstraint("course_id", "number", name=op.f("uq_course_versions_course_id")),
    )
    op.create_index(
        op.f("ix_course_versions_course_id"), "course_versions", ["course_id"], unique=False
    )
    courses = sa.table(
        "courses",
        sa.column("id", sa.Integer),
        sa.column("slug", sa.String),
        sa.column("title", sa.String),
        sa.column("description", sa.Text),
        sa.column("language", sa.String),
        sa.column("status", sa.String),
        sa.column("weekdays_only", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        courses.insert().values(
            id=1,
            slug="feeling-secure",
            title="Feeling secure in your relationship",
            description="",
            language="en",
            status="published",
            weekdays_only=False,
            created_at=sa.func.now(),
        )
    )
    if op.get_bind().dialect.name == "postgresql":
        # The row above took id 1 explicitly: move the sequence past it, or the next course
        # created would be given id 1 again.
        op.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('courses', 'id'), "
                "(SELECT max(id) FROM courses))"
            )
        )
    # Plain ADD COLUMN (see 0006): "subscribers" is never rebuilt, because reflection cannot
    # see its expression index. Existing rows belong to course 1.
    op.add_column(
        "subscribers",
        sa.Column("course_id", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column(
        "subscribers", sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(op.f("ix_subscribers_course_id"), "subscribers", ["course_id"])
    op.drop_index("uq_subscribers_email_lower", table_name="subscribers")
    op.create_index(
        "uq_subscribers_course_email_lower",
        "subscribers",
        ["course_id", sa.text("lower(email)")],
        unique=True,
    )
    op.create_index("ix_subscribers_email_lower", "subscribers", [sa.text("lower(email)")])
    op.add_column("events", sa.Column("course_id", sa.Integer(), nullable=True))
    op.execute(sa.text("UPDATE events SET course_id = 1"))
    op.create_index(op.f("ix_events_course_id"), "events", ["course_id"])
    op.add_column(
        "signup_requests",
        sa.Column("course_id", sa.Integer(), nullable=False, server_default="1"),
    )


def downgrade() -> None:
    # Only the first course's readers can go back to a database of one course, and the
    # older sender knows no emails after the course: those not yet sent are dropped.
    op.execute(
        sa.text(
            "DELETE FROM deliveries WHERE kind IN ('completion', 'followup') "
            "AND sent_at IS NULL"
        )
    )
    op.execute(sa.text("DELETE FROM signup_requests WHERE course_id <> 1"))
    op.drop_column("signup_requests", "course_id")
    op.drop_index(op.f("ix_events_course_id"), table_name="events")
    op.execute(sa.text("DELETE FROM events WHERE course_id <> 1"))
    op.drop_column("events", "course_id")
    # Explicitly, not by ON DELETE: SQLite enforces foreign keys only when asked to.
    others = "SELECT id FROM subscribers WHERE course_id <> 1"
    for table in ("deliveries", "lesson_progress", "replies"):
        op.execute(sa.text(f"DELETE FROM {table} WHERE subscriber_id IN ({others})"))
    op.execute(
        sa.text(f"UPDATE audit_log SET subscriber_id = NULL WHERE subscriber_id IN ({others})")
    )
    op.execute(sa.text("DELETE FROM subscribers WHERE course_id <> 1"))
    op.drop_index("ix_subscribers_email_lower", table_name="subscribers")
    op.drop_index("uq_subscribers_course_email_lower", table_name="subscribers")
    op.create_index(
        "uq_subscribers_email_lower", "subscribers", [sa.text("lower(email)")], unique=True
    )
    op.drop_index(op.f("ix_subscribers_course_id"), table_name="subscribers")
    op.drop_column("subscribers", "snoozed_until")
    op.drop_column("subscribers", "course_id")
    op.drop_index(op.f("ix_course_versions_course_id"), table_name="course_versions")
    op.drop_table("course_versions")
    op.drop_table("courses")
