"""The sending engine's hot-path statements (course.delivery_store) on both databases."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from course.db import make_engine
from course.delivery_store import PostgresStore, store_for
from course.models import Delivery, DeliveryKind, DeliveryStatus, Subscriber, SubscriberStatus
from course.subscriptions import lesson_params

NOW = datetime(2026, 11, 26, 8, tzinfo=UTC)


def _reader_with_lesson(url: str, email: str = "ana@example.org") -> tuple[int, int]:
    """An active reader of course 1 with lesson 1 queued and claimed; (subscriber, delivery)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        sid = conn.execute(
            Subscriber.__table__.insert()
            .values(
                course_id=1,
                public_id="pid-" + email.split("@")[0],
                email=email,
                mailbox=email,
                timezone="UTC",
                status=SubscriberStatus.ACTIVE,
                created_at=NOW,
                confirmed_at=NOW,
            )
            .returning(Subscriber.id)
        ).scalar_one()
        did = conn.execute(
            Delivery.__table__.insert()
            .values(
                subscriber_id=sid,
                kind=DeliveryKind.LESSON,
                number=1,
                status=DeliveryStatus.QUEUED,
                due_at=NOW,
                claimed_by="me",
                created_at=NOW,
            )
            .returning(Delivery.id)
        ).scalar_one()
    engine.dispose()
    return sid, did


def test_recording_a_send_with_the_next_lesson_is_what_the_two_statements_do(db_url: str) -> None:
    """sent_and_queue (one statement on PostgreSQL) gives the rows mark_sent + queue give."""
    results = []
    for email, combined in (("a@example.org", True), ("b@example.org", False)):
        sid, did = _reader_with_lesson(db_url, email)
        engine = make_engine(db_url)
        store = store_for(engine)
        try:
            store.begin()
            check = store.check(did)
            assert check is not None and check.claimed_by == "me"
            assert check.subscriber_status == SubscriberStatus.ACTIVE
            params = lesson_params(sid, 2, NOW + timedelta(days=1), run=1)
            if combined:
                store.sent_and_queue(did, NOW, params)
            else:
                store.mark_sent(did, NOW)
                store.queue(params)
            store.commit()
        finally:
            store.close()
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    Delivery.number,
                    Delivery.status,
                    Delivery.sent_at,
                    Delivery.due_at,
                    Delivery.claimed_by,
                    Delivery.attempts,
                )
                .where(Delivery.subscriber_id == sid)
                .order_by(Delivery.number)
            ).all()
        engine.dispose()
        results.append([tuple(r) for r in rows])
    combined_rows, separate_rows = results
    assert combined_rows == separate_rows
    assert combined_rows == [
        (1, DeliveryStatus.SENT, NOW, NOW, None, 1),
        (2, DeliveryStatus.QUEUED, None, NOW + timedelta(days=1), None, 0),
    ]


@pytest.mark.postgres
def test_the_check_locks_the_reader_before_it_waits_for_the_delivery(db_url: str) -> None:
    """PostgreSQL takes the reader's lock first: the order of the web's changes, so a
    sender and an unsubscribe cannot deadlock (course.delivery_store._LOCK)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks")
    sid, did = _reader_with_lesson(db_url)
    engine = make_engine(db_url)
    other = engine.connect()
    web = engine.connect()
    store = store_for(engine)
    assert isinstance(store, PostgresStore)
    try:
        other.execute(text("SELECT 1 FROM deliveries WHERE id = :d FOR UPDATE"), {"d": did})
        store.begin()
        checking = threading.Thread(target=store.check, args=(did,))
        checking.start()
        time.sleep(0.5)  # the check now waits for the delivery's lock
        assert checking.is_alive()
        web.execute(text("SET lock_timeout = '300ms'"))
        with pytest.raises(OperationalError, match="lock timeout"):
            web.execute(
                text("UPDATE subscribers SET status = 'unsubscribed' WHERE id = :s"), {"s": sid}
            )
        web.rollback()
        other.rollback()  # the delivery is free: the check gets both locks
        checking.join(timeout=10)
        assert not checking.is_alive()
        store.rollback()
    finally:
        store.close()
        other.close()
        web.close()
        engine.dispose()
