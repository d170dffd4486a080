"""Engine setup: on SQLite, read-only sessions never hold the write lock."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from course.db import make_engine, make_sessionmaker
from course.models import SchedulerTick, Subscriber, utcnow


@pytest.mark.parametrize(("readonly", "writer_blocked"), [(True, False), (False, True)])
def test_readers_do_not_block_writers_on_sqlite(
    sqlite_url: str, readonly: bool, writer_blocked: bool
) -> None:
    reader_engine = make_engine(sqlite_url)
    writer_engine = make_engine(sqlite_url, connect_args={"timeout": 0.2})
    try:
        reader = make_sessionmaker(reader_engine, readonly=readonly)()
        reader.begin()
        reader.scalar(select(func.count()).select_from(Subscriber))  # a long report, say
        writer = make_sessionmaker(writer_engine)
        try:
            with writer() as s, s.begin():
                s.add(SchedulerTick(worker="w", last_tick_at=utcnow()))
            blocked = False
        except OperationalError as exc:
            assert "locked" in str(exc)
            blocked = True
        reader.close()
        assert blocked is writer_blocked
    finally:
        reader_engine.dispose()
        writer_engine.dispose()


def test_sender_engine_commits_asynchronously_on_postgresql(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    for asynchronous, expected in ((True, "off"), (False, "on")):
        engine = make_engine(db_url, asynchronous_commit=asynchronous)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == expected
        engine.dispose()


def test_the_purge_of_unconfirmed_signups_reads_its_index(db_url: str) -> None:
    """The hourly purge must stay flat with the number of readers: the database can answer
    it from the partial index on pending rows (migration 0012), not by reading the table."""
    from datetime import timedelta

    from sqlalchemy import delete, text

    from course.models import SubscriberStatus

    engine = make_engine(db_url)
    statement = delete(Subscriber).where(
        Subscriber.status == SubscriberStatus.PENDING,
        func.coalesce(Subscriber.confirm_sent_at, Subscriber.created_at)
        < utcnow() - timedelta(days=7),
    )
    try:
        with engine.connect() as conn:
            compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET enable_seqscan = off"))  # an empty table: ask for it
                plan = conn.execute(text(f"EXPLAIN {compiled}")).scalars().all()
            else:
                plan = [row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))]
            conn.rollback()
    finally:
        engine.dispose()
    assert any("ix_subscribers_pending_since" in line for line in plan), plan
