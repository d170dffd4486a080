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
