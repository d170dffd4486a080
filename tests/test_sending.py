"""The sending engine with a controllable clock: the whole course, crashes, failures."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from course.config import Settings
from course.mail import PermanentError, TransientError
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
)
from course.subscriptions import confirm, subscribe, validate_signup
from tests.conftest import (
    FakeClock,
    courses_for,
    engine_settings,
    make_sender,
    publish_a_broken_lesson,
    sessions_for,
)
from tests.helpers import parse


class MemoryTransport:
    """Records what it is asked to send; can fail chosen recipients. A test double for the
    transport interface only: SMTP itself is tested against a real server elsewhere."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail: dict[str, Exception] = {}

    def open(self) -> MemoryTransport:
        return self

    def __enter__(self) -> MemoryTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        if to in self.fail:
            raise self.fail[to]
        self.sent.append((to, message))

    def subjects(self, to: str) -> list[str]:
        return [str(parse(m)["Subject"]) for t, m in self.sent if t == to]


def enrol(settings: Settings, clock: FakeClock, email: str, tz: str = "Europe/Berlin") -> str:
    """Sign up and confirm directly through the domain functions; returns the public id."""
    sessions = sessions_for(settings.database_url)
    data = validate_signup({"email": email, "timezone": tz}, check_deliverability=False)
    with sessions() as s, s.begin():
        sub = subscribe(
            s, data, now=clock(), default_timezone="UTC", resend_after=timedelta(minutes=5)
        )
        public_id = sub.public_id
    with sessions() as s, s.begin():
        confirm(s, public_id, clock(), courses=courses_for(settings), settings=settings)
    return public_id


def rows(settings: Settings) -> list[Delivery]:
    sessions = sessions_for(settings.database_url)
    with sessions() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.id)))


@pytest.fixture
def setup(tmp_path: Path, db_url: str, clock: FakeClock) -> tuple[Settings, MemoryTransport]:
    return engine_settings(tmp_path, db_url), MemoryTransport()


def run_days(sender, clock: FakeClock, days: int, step_minutes: int = 30) -> None:  # type: ignore[no-untyped-def]
    for _ in range(days * 24 * 60 // step_minutes):
        sender.tick()
        clock.advance(minutes=step_minutes)


def test_full_course_arrives_once_in_order_at_the_send_hour(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    sender = make_sender(settings, transport, clock)
    enrol(settings, clock, "ana@example.com", tz="America/New_York")
    run_days(sender, clock, days=8)
    lessons = [m for t, m in transport.sent if "lesson-" in str(parse(m)["Message-ID"])]
    numbers = [int(str(parse(m)["Message-ID"]).split("-")[1].split(".")[0]) for m in lessons]
    assert numbers == [1, 2, 3, 4, 5]
    # Lessons 2..5 arrive at 08:00 New York time, on consecutive days.
    tz = ZoneInfo("America/New_York")
    sent_at = sorted(d.sent_at for d in rows(settings) if d.kind == "lesson")
    for earlier, later in zip(sent_at[1:], sent_at[2:], strict=False):
        assert (later.astimezone(tz).date() - earlier.astimezone(tz).date()).days == 1
    for when in sent_at[1:]:
        local = when.astimezone(tz)
        assert (local.hour, local.minute) == (8, 0)
    with sessions_for(settings.database_url)() as s:
        assert s.scalars(select(Subscriber)).one().status == SubscriberStatus.COMPLETED


def test_confirmation_is_sent_on_the_first_tick_and_only_once(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    sessions = sessions_for(settings.database_url)
    data = validate_signup({"email": "ana@example.com"}, check_deliverability=False)
    with sessions() as s, s.begin():
        subscribe(s, data, now=clock(), default_timezone="UTC", resend_after=timedelta(1))
    sender = make_sender(settings, transport, clock)
    sender.tick()
    sender.tick()
    assert len(transport.sent) == 1
    assert "confirm" in str(parse(transport.sent[0][1])["Subject"]).lower()
    run_days(sender, clock, days=2)
    assert len(transport.sent) == 1  # nothing else before confirmation


def test_a_crash_between_claim_and_send_resends_once_with_the_same_message_id(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    enrol(settings, clock, "ana@example.com")
    crashed = make_sender(settings, transport, clock, worker="crashed")
    claimed = crashed.claim(10)
    assert len(claimed) == 1
    # The process dies here. Another sender does not touch the claim while the lease holds.
    survivor = make_sender(settings, transport, clock, worker="survivor")
    survivor.tick()
    assert transport.sent == []
    clock.advance(seconds=settings.claim_lease_seconds + 1)
    survivor.tick()
    survivor.tick()
    assert len(transport.sent) == 1
    [delivery] = [d for d in rows(settings) if d.kind == "lesson" and d.number == 1]
    assert delivery.status == DeliveryStatus.SENT


def test_a_crash_after_smtp_accepted_resends_with_the_same_message_id(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, transport = setup
    enrol(settings, clock, "ana@example.com")
    crashed = make_sender(settings, transport, clock, worker="crashed")

    def die(*_args: object) -> None:
        raise SystemExit("killed after the server accepted the message")

    monkeypatch.setattr(crashed, "_record_sent", die)
    with pytest.raises(SystemExit):
        crashed.tick()
    clock.advance(seconds=settings.claim_lease_seconds + 1)
    make_sender(settings, transport, clock, worker="survivor").tick()
    ids = [str(parse(m)["Message-ID"]) for _, m in transport.sent]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_one_failing_address_does_not_stop_the_batch(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    for name in ("a", "b", "c"):
        enrol(settings, clock, f"{name}@example.com")
    transport.fail["a@example.com"] = TransientError("451 try later")
    transport.fail["b@example.com"] = PermanentError("550 5.1.1 no such user", bounce=True)
    result = make_sender(settings, transport, clock).tick()
    assert (result.sent, result.retried, result.failed) == (1, 1, 1)
    assert [t for t, _ in transport.sent] == ["c@example.com"]
    with sessions_for(settings.database_url)() as s:
        statuses = {sub.email: sub.status for sub in s.scalars(select(Subscriber))}
    assert statuses["b@example.com"] == SubscriberStatus.BOUNCED
    assert statuses["a@example.com"] == SubscriberStatus.ACTIVE


def test_after_downtime_only_the_due_lesson_goes_out(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    sender = make_sender(settings, transport, clock)
    enrol(settings, clock, "ana@example.com", tz="UTC")
    sender.tick()  # lesson 1
    clock.advance(days=4)  # the scheduler was down for four days
    for _ in range(48):
        sender.tick()
        clock.advance(minutes=30)
    lesson_times = sorted(d.sent_at for d in rows(settings) if d.sent_at and d.kind == "lesson")
    assert len(lesson_times) == 2  # one catch-up lesson, not a burst of three
    gaps = [b - a for a, b in zip(lesson_times, lesson_times[1:], strict=False)]
    assert all(gap >= timedelta(hours=20) for gap in gaps)


def test_interval_mode_runs_the_course_in_seconds(tmp_path: Path, db_url: str) -> None:
    settings = engine_settings(tmp_path, db_url, LESSON_INTERVAL=30)
    clock = FakeClock()
    transport = MemoryTransport()
    sender = make_sender(settings, transport, clock)
    enrol(settings, clock, "ana@example.com")
    for _ in range(20):
        sender.tick()
        clock.advance(seconds=10)
    subjects = transport.subjects("ana@example.com")
    # The five lessons, then the completion email a "day" (30 s) after the last one; the
    # follow-up comes 14 "days" later, after this loop.
    assert [s[:10] for s in subjects[:5]] == [f"Day {n} of 5" for n in range(1, 6)]
    assert subjects[5:] == ["You finished the course"]


def test_a_broken_lesson_waits_and_the_others_still_go_out(
    tmp_path: Path, db_url: str, clock: FakeClock
) -> None:
    settings = engine_settings(tmp_path, db_url, LESSON_INTERVAL=60)
    publish_a_broken_lesson(settings.database_url)
    transport = MemoryTransport()
    sender = make_sender(settings, transport, clock)
    enrol(settings, clock, "waiting@example.com")
    sender.tick()  # lesson 1
    clock.advance(minutes=2)
    enrol(settings, clock, "new@example.com")
    sender.tick()  # lesson 2 is broken: waits; the new reader still gets lesson 1
    assert [t for t, _ in transport.sent] == ["waiting@example.com", "new@example.com"]
    lesson_2 = [d for d in rows(settings) if d.kind == "lesson" and d.number == 2]
    assert lesson_2 and all(d.status == DeliveryStatus.QUEUED for d in lesson_2)
    waiting = min(lesson_2, key=lambda d: d.subscriber_id)  # the first reader's
    assert "no_such_slot" in (waiting.last_error or "")


def test_release_claims_hands_back_work(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    enrol(settings, clock, "ana@example.com")
    sender = make_sender(settings, transport, clock, worker="stopping")
    assert len(sender.claim(10)) == 1
    assert sender.release_claims() == 1
    other = make_sender(settings, transport, clock, worker="other")
    other.tick()
    assert len(transport.sent) == 1


def test_the_next_lesson_is_only_queued_after_the_previous_was_accepted(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    settings, transport = setup
    enrol(settings, clock, "ana@example.com")
    transport.fail["ana@example.com"] = TransientError("451 greylisted")
    sender = make_sender(settings, transport, clock)
    run_days(sender, clock, days=1, step_minutes=20)
    lesson_rows = [d for d in rows(settings) if d.kind == DeliveryKind.LESSON]
    assert [(d.number, d.status) for d in lesson_rows] == [(1, DeliveryStatus.QUEUED)]
    assert lesson_rows[0].attempts > 3


def test_a_failed_lesson_can_be_retried_and_a_cancelled_one_is_not_failed(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    from course.subscriptions import by_public_id, pause, retry_failed

    settings, transport = setup
    pid = enrol(settings, clock, "ana@example.com")
    transport.fail["ana@example.com"] = TransientError("451 relay down")
    sender = make_sender(settings, transport, clock)
    for _ in range(40):  # more than a day of retries
        sender.tick()
        clock.advance(hours=1)
    [row] = [d for d in rows(settings) if d.kind == "lesson"]
    assert row.status == DeliveryStatus.FAILED
    del transport.fail["ana@example.com"]
    sessions = sessions_for(settings.database_url)
    with sessions() as s, s.begin():
        assert retry_failed(s, by_public_id(s, pid), clock(), operator_id=1) == 1
    sender.tick()
    assert len(transport.sent) == 1
    [row] = [d for d in rows(settings) if d.kind == "lesson" and d.number == 1]
    assert row.status == DeliveryStatus.SENT
    # A pause that lands while a message is out: the transient result must not resurrect
    # the cancelled row as "failed" or queue it again.
    claimed = sender.claim(10)
    assert claimed == []  # lesson 2 is not due yet
    clock.advance(days=2)
    claimed = sender.claim(10)
    with sessions() as s, s.begin():
        pause(s, by_public_id(s, pid), clock())
    assert sender._record_transient(claimed[0], "451 later") == "skipped"
    statuses = {d.number: d.status for d in rows(settings) if d.kind == "lesson"}
    assert statuses[2] == DeliveryStatus.CANCELLED


def test_erasing_a_reader_mid_send_does_not_stop_the_batch(
    setup: tuple[Settings, MemoryTransport], clock: FakeClock
) -> None:
    from course.privacy import erase
    from course.subscriptions import by_public_id

    settings, transport = setup
    gone = enrol(settings, clock, "gone@example.com")
    enrol(settings, clock, "stays@example.com")
    sessions = sessions_for(settings.database_url)

    erasing: list[threading.Thread] = []

    def erase_now() -> None:
        with sessions() as s, s.begin():
            erase(s, by_public_id(s, gone), settings.secret_keys, clock())

    class EraseOnSend(MemoryTransport):
        def send(self, envelope_from: str, to: str, message: bytes) -> None:
            super().send(envelope_from, to, message)
            if to == "gone@example.com":
                # A web request of its own: on PostgreSQL it waits for the message in
                # flight to be recorded (the sender holds the reader's row meanwhile).
                erasing.append(threading.Thread(target=erase_now))
                erasing[0].start()

    eraser = EraseOnSend()
    result = make_sender(settings, eraser, clock).tick()
    erasing[0].join(timeout=30)
    assert not erasing[0].is_alive()
    assert sorted(t for t, _ in eraser.sent) == ["gone@example.com", "stays@example.com"]
    assert result.sent == 2
    # Both sends are on record (the erased reader's row stays, naming nobody), and only
    # the reader who stays has a next lesson waiting: the erasure cancelled the other's.
    assert [d.status for d in rows(settings) if d.kind == "lesson" and d.number == 1] == [
        DeliveryStatus.SENT,
        DeliveryStatus.SENT,
    ]
    assert len([d for d in rows(settings) if d.status == DeliveryStatus.QUEUED]) == 1
