"""The migrations build exactly the tables the models describe, on SQLite and PostgreSQL,
and can be undone."""

from __future__ import annotations

import warnings
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from course.db import alembic_config
from course.models import Base


def _differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite's reflection cannot read the expression index on lower(email).
            warnings.filterwarnings("ignore", "Skipped unsupported reflection")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified")
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    # The expression indexes on lower(email) (subscribers, operators) are created by their
    # migrations and cannot be compared by reflection.
    return [d for d in diffs if "_email_lower" not in repr(d)]


def test_the_migrated_database_matches_the_models(db_url: str) -> None:
    assert _differences(db_url) == []


def test_every_migration_can_be_undone_and_done_again(db_url: str) -> None:
    config = alembic_config(db_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    assert _differences(db_url) == []
