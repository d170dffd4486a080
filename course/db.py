"""Database engine and session setup, shared by the web app, the scheduler and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, *, asynchronous_commit: bool = False, **kwargs: Any) -> Engine:
    """Create an engine; on SQLite, switch on what a multi-process app needs.

    ``asynchronous_commit`` (PostgreSQL only) is for the sender: a commit returns before
    the server has flushed it to disk. If the database server itself crashes, the last
    fraction of a second of records can be lost, so those messages are sent again, with
    the same Message-ID, exactly like after a sender crash. A sender crash loses nothing
    (the server has the commit). In exchange, each message costs one disk flush less.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # The web process and the scheduler share the file: wait for locks instead of
        # failing at once.
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Take the write lock at BEGIN (not at the first write), so two writers queue
            # on busy_timeout instead of one failing with "database is locked".
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Read-only sessions (reports, exports) begin DEFERRED: in WAL mode they then
            # never block the sender or a signup, however long they read.
            options = conn.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT":
                return  # each statement is its own transaction (a signup's one insert)
            readonly = options.get("course_readonly", False)
            conn.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if asynchronous_commit and engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _async_commit(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SET synchronous_commit = off")
            dbapi_conn.commit()

    return engine


def make_sessionmaker(engine: Engine, *, readonly: bool = False) -> sessionmaker[Session]:
    """A session factory; ``expire_on_commit=False`` keeps loaded rows usable after commit.

    ``readonly=True`` is for sessions that only read (dashboards, exports): on SQLite they
    do not take the write lock. Nothing stops them from writing; they just should not.
    """
    bind = engine.execution_options(course_readonly=True) if readonly else engine
    return sessionmaker(bind, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic configuration pointing at the packaged migrations and ``url``."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", first_course: Path | None = None) -> None:
    """Apply migrations up to ``revision``; at head, give the first course its lessons if
    it has none yet (from ``first_course``, a course folder, or the shipped course)."""
    command.upgrade(alembic_config(url), revision)
    if revision != "head":
        return
    # Imported here: the database layer stays below the domain modules.
    from course.courses import seed_first_course
    from course.models import utcnow
    from course.resources import LESSONS_PACKAGE, package_dir

    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            seed_first_course(session, first_course or package_dir(LESSONS_PACKAGE), utcnow())
    finally:
        engine.dispose()
