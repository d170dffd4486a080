"""A database as it was before courses (revision 0010), filled with readers at every stage
of the five-day course.

Written with plain SQL on the tables as they are at 0010 (reflected from the database), so
it never depends on today's models, which describe the schema after the migration.
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, MetaData, create_engine, select

from course.crypto import encrypt, use_keys
from course.mailboxes import fingerprints, mailbox
from tests.conftest import DATA_KEY, SECRET

#: The moment of the upgrade: FakeClock's default start, a Monday, 08:00 in Berlin.
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)

#: The old five days, as the lesson files named them (``day:``) before courses existed.
OLD_DAYS = {
    1: "where-insecurity-comes-from",
    2: "self-reflection",
    3: "self-esteem",
    4: "communication",
    5: "seeking-support",
}

ENCRYPTED_NOTE = "I check my phone every time he is late. Writing it down helped a little."
PLAIN_NOTE = "Talked to Sam tonight. It went better than I feared."  # from before 0009
REPLY_TEXT = "Thank you for lesson 2, it made me cry a bit (in a good way)."


def at(days: float, hour: int = 7, minute: int = 0) -> datetime:
    """A moment ``days`` before or after the upgrade's day (negative: before), in UTC."""
    return NOW.replace(hour=hour, minute=minute) + timedelta(days=days)


@dataclass
class Reader:
    """One person on the old (only) course."""

    label: str
    id: int
    public_id: str
    email: str


@dataclass
class Population:
    """What was written: readers by label, and the ids of the rows tests look at again."""

    readers: dict[str, Reader] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, label: str) -> Reader:
        return self.readers[label]


def reflect(conn: Connection) -> MetaData:
    """The tables as the database has them now."""
    meta = MetaData()
    with warnings.catch_warnings():
        # SQLite's reflection cannot read the expression indexes on lower(email).
        warnings.filterwarnings("ignore", "Skipped unsupported reflection")
        meta.reflect(conn)
    return meta


def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (but Alembic's own), ordered by primary key."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            meta = reflect(conn)
            found: dict[str, list[dict[str, Any]]] = {}
            for name, table in meta.tables.items():
                if name == "alembic_version":
                    continue
                query = select(table).order_by(*table.primary_key.columns)
                found[name] = [dict(row._mapping) for row in conn.execute(query)]
            return found
    finally:
        engine.dispose()


class _Writer:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tables = reflect(conn).tables
        self.population = Population()

    def insert(self, table: str, **values: Any) -> int:
        result = self.conn.execute(self.tables[table].insert().values(**values))
        key = result.inserted_primary_key
        return int(key[0]) if key and isinstance(key[0], int) else 0

    def reader(self, label: str, email: str, status: str, **values: Any) -> Reader:
        public_id = secrets.token_urlsafe(16)
        values = {
            "public_id": public_id,
            "email": email,
            "mailbox": mailbox(email),
            "name": label.capitalize(),
            "timezone": "Europe/Berlin",
            "country": "DE",
            "source": "website",
            "consent_source": "hosted",
            "consent_origin": "https://harbor.example.org/course",
            "consent_text_hash": "c" * 64,
            "status": status,
            "confirm_count": 1,
            **values,
        }
        row_id = self.insert("subscribers", **values)
        found = Reader(label, row_id, public_id, email)
        self.population.readers[label] = found
        return found

    def delivery(
        self,
        reader: Reader,
        number: int,
        status: str,
        sent: datetime | None,
        *,
        kind: str = "lesson",
        due: datetime | None = None,
        **values: Any,
    ) -> int:
        when = sent or due
        assert when is not None
        values = {
            "subscriber_id": reader.id,
            "kind": kind,
            "number": number,
            "status": status,
            "due_at": due or when,
            "attempts": 1 if sent else 0,
            "created_at": when - timedelta(days=1) if kind == "lesson" and number > 1 else when,
            "sent_at": sent,
            **values,
        }
        return self.insert("deliveries", **values)

    def lessons(self, reader: Reader, first: datetime, days: range, *, run: int = 1) -> None:
        """Lessons ``days`` sent one a day from ``first``."""
        for offset, day in enumerate(days):
            self.delivery(reader, day, "sent", first + timedelta(days=offset), run=run)

    def event(self, reader: Reader | None, kind: str, when: datetime, **values: Any) -> int:
        return self.insert(
            "events",
            subscriber_id=reader.id if reader else None,
            kind=kind,
            via=values.pop("via", "link"),
            created_at=when,
            **values,
        )


def populate(url: str) -> Population:
    """Fill a database at revision 0010 with readers at every stage of the course."""
    use_keys([DATA_KEY])
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return _populate(_Writer(conn))
    finally:
        engine.dispose()


def _populate(w: _Writer) -> Population:
    rows = w.population.rows
    consent = "By signing up you agree to receive a five-day email course."
    w.insert("consent_texts", hash="c" * 64, text=consent, first_seen=at(-60))
    owner = w.insert(
        "operators",
        email="Owner@Harbor.example.org",
        password_hash="scrypt:32768:8:1$salt$hash",
        timezone="Europe/Berlin",
        created_at=at(-90),
        last_login_at=at(-1, 9),
        session_version=3,
        role="owner",
    )
    therapist = w.insert(
        "operators",
        email="therapist@harbor.example.org",
        password_hash="scrypt:32768:8:1$salt$hash2",
        timezone="Europe/Berlin",
        created_at=at(-30),
        role="therapist",
        totp_secret=encrypt("JBSWY3DPEHPK3PXP"),
        totp_enabled_at=at(-29),
        totp_last_step=59_000_000,
        recovery_codes='["h1", "h2"]',
    )
    rows.update(owner=owner, therapist=therapist)

    # Signed up, confirmation sent, not clicked yet.
    pia = w.reader("pending", "pia@example.com", "pending", created_at=at(-1, 18))
    pia_confirm = at(-1, 18, 1)
    w.delivery(pia, 1, "sent", pia_confirm, kind="confirm")
    w.conn.execute(
        w.tables["subscribers"]
        .update()
        .where(w.tables["subscribers"].c.id == pia.id)
        .values(confirm_sent_at=pia_confirm)
    )
    # Signed up a minute before the upgrade: the confirmation is still queued.
    pat = w.reader(
        "pending_queued",
        "pat@example.com",
        "pending",
        created_at=at(0, 6, 59),
        confirm_sent_at=at(0, 6, 59),
    )
    w.delivery(pat, 1, "queued", None, kind="confirm", due=at(0, 6, 59))

    # Mid-course: lessons 1-2 sent, lesson 3 queued for this morning's send hour.
    mia = w.reader(
        "mid",
        "Mia.Mid@Example.ORG",
        "active",
        created_at=at(-2, 10),
        confirm_sent_at=at(-2, 10),
        confirmed_at=at(-2, 10, 15),
    )
    w.delivery(mia, 1, "sent", at(-2, 10), kind="confirm")
    w.delivery(mia, 1, "sent", at(-2, 10, 16))
    w.delivery(mia, 2, "sent", at(-1))
    w.delivery(mia, 3, "queued", None, due=at(0))
    w.event(mia, "confirm", at(-2, 10, 15), value="run-1", via="page")
    w.event(mia, "view", at(-2, 20), lesson=1)
    w.event(mia, "done", at(-2, 20, 30), lesson=1)
    w.event(mia, "checkin", at(-2, 20, 31), lesson=1, value="lighter")
    w.event(mia, "note", at(-2, 20, 35), lesson=1, via="page")
    w.event(mia, "checkin", at(-1, 19), lesson=2, value="stirred")
    w.event(mia, "note", at(-1, 19, 5), lesson=2, via="page")
    w.event(mia, "book", at(-1, 19, 10), lesson=2)
    rows["encrypted_note"] = w.insert(
        "lesson_progress",
        subscriber_id=mia.id,
        lesson=1,
        run=1,
        done_at=at(-2, 20, 30),
        checkin="lighter",
        checkin_at=at(-2, 20, 31),
        note=encrypt(ENCRYPTED_NOTE),
        note_at=at(-2, 20, 35),
    )
    rows["plain_note"] = w.insert(
        "lesson_progress",
        subscriber_id=mia.id,
        lesson=2,
        run=1,
        checkin="stirred",
        checkin_at=at(-1, 19),
        note=PLAIN_NOTE,
        note_at=at(-1, 19, 5),
        risk="r3",
    )
    rows["reply"] = w.insert(
        "replies",
        subscriber_id=mia.id,
        lesson=2,
        subject=encrypt("Re: Day 2 of 5: Getting to know your triggers"),
        text=encrypt(REPLY_TEXT),
        received_at=at(-1, 21),
    )
    w.insert(
        "care_marks",
        item=f"note:{rows['plain_note']}",
        status="seen",
        operator_id=therapist,
        marked_at=at(-1, 20),
    )
    w.insert(
        "care_alerts",
        item=f"note:{rows['plain_note']}",
        created_at=at(-1, 19, 5),
        sent_at=at(-1, 19, 10),
    )
    w.insert(
        "audit_log",
        operator_id=therapist,
        action="view_notes",
        subscriber_id=mia.id,
        detail="reader page",
        created_at=at(-1, 20),
    )

    # Paused after lesson 2 (New York, evening send hour): lesson 3 waits, cancelled.
    paul = w.reader(
        "paused",
        "paul@example.net",
        "paused",
        timezone="America/New_York",
        country="US",
        send_hour=19,
        created_at=at(-8, 23),
        confirmed_at=at(-8, 23, 30),
    )
    w.lessons(paul, at(-8, 23, 31), range(1, 2))
    w.delivery(paul, 2, "sent", at(-6, 0))
    w.delivery(paul, 3, "cancelled", None, due=at(-5, 0))
    w.event(paul, "checkin", at(-7, 2), lesson=1, value="same")
    w.event(paul, "pause", at(-6, 1), lesson=2, via="page")
    w.insert(
        "lesson_progress",
        subscriber_id=paul.id,
        lesson=1,
        run=1,
        checkin="same",
        checkin_at=at(-7, 2),
    )

    # Completed all five; the practice re-sent lesson 2 once (generation 1).
    carol = w.reader(
        "completed",
        "carol@example.org",
        "completed",
        created_at=at(-15, 6),
        confirmed_at=at(-15, 6, 5),
        completed_at=at(-11),
    )
    w.lessons(carol, at(-15, 6, 6), range(1, 2))
    w.delivery(carol, 2, "sent", at(-14), generation=1, attempts=2)
    w.lessons(carol, at(-13), range(3, 6))
    w.event(carol, "resend", at(-12, 9), lesson=2, via="admin", operator_id=owner)
    for day in range(1, 6):
        w.event(carol, "done", at(-15 + day, 20), lesson=day)
        w.insert(
            "lesson_progress", subscriber_id=carol.id, lesson=day, run=1, done_at=at(-15 + day, 20)
        )

    # Completed, and an operator's re-send of lesson 4 is queued at the upgrade.
    cora = w.reader(
        "resend_queued",
        "cora@example.org",
        "completed",
        created_at=at(-9, 6),
        confirmed_at=at(-9, 6, 5),
        completed_at=at(-5),
    )
    w.lessons(cora, at(-9, 6, 6), range(1, 4))
    w.delivery(cora, 4, "queued", at(-6), due=at(0, 6, 58), generation=1, attempts=1)
    w.lessons(cora, at(-5), range(5, 6))
    w.event(cora, "resend", at(0, 6, 58), lesson=4, via="admin", operator_id=owner)

    # Unsubscribed after lesson 2.
    uma = w.reader(
        "unsubscribed",
        "uma@example.net",
        "unsubscribed",
        created_at=at(-10),
        confirmed_at=at(-10, 7, 5),
        unsubscribed_at=at(-8, 12),
    )
    w.lessons(uma, at(-10, 7, 6), range(1, 3))
    w.delivery(uma, 3, "cancelled", None, due=at(-8))
    w.event(uma, "unsubscribe", at(-8, 12), lesson=2, via="one-click")

    # Bounced on lesson 2 (a DSN after sending).
    bo = w.reader(
        "bounced",
        "bo@example.invalid",
        "bounced",
        created_at=at(-6),
        confirmed_at=at(-6, 7, 5),
        unsubscribed_at=at(-5, 7, 10),
        soft_bounces=2,
    )
    w.lessons(bo, at(-6, 7, 6), range(1, 3))
    w.delivery(bo, 3, "cancelled", None, due=at(-4))
    w.event(bo, "bounce", at(-5, 7, 10), value="hard:5.1.1", via="relay")
    w.insert(
        "inbound_messages",
        key="bounces:3f2a9c",
        source="bounces",
        mailbox_id="17",
        outcome="bounce",
        created_at=at(-5, 7, 10),
    )
    w.insert(
        "suppressions",
        fingerprint=fingerprints([SECRET], bo.email)[0],
        reason="bounced",
        created_at=at(-5, 7, 10),
    )

    # Active, stalled on a lesson the relay kept refusing.
    fay = w.reader(
        "failed",
        "fay@example.com",
        "active",
        created_at=at(-12),
        confirmed_at=at(-12, 7, 5),
    )
    w.lessons(fay, at(-12, 7, 6), range(1, 2))
    rows["failed_delivery"] = w.delivery(
        fay,
        2,
        "failed",
        None,
        due=at(-10, 9),
        attempts=14,
        last_error="451 4.3.0 mailbox temporarily unavailable",
        first_failed_at=at(-11),
        failed_at=at(-10, 7, 5),
    )

    # Came back: run 1 stopped after lesson 3, run 2 has had lesson 1, lesson 2 is due.
    rita = w.reader(
        "returning",
        "rita@example.org",
        "active",
        run=2,
        confirm_count=2,
        created_at=at(-20),
        confirm_sent_at=at(-1, 9),
        confirmed_at=at(-1, 9, 4),
    )
    w.delivery(rita, 1, "sent", at(-20), kind="confirm", run=1)
    w.lessons(rita, at(-20, 7, 5), range(1, 4), run=1)
    w.delivery(rita, 4, "cancelled", None, due=at(-17), run=1)
    w.delivery(rita, 2, "sent", at(-1, 9), kind="confirm", run=2)
    w.delivery(rita, 1, "sent", at(-1, 9, 5), run=2)
    w.delivery(rita, 2, "queued", None, due=at(0), run=2)
    w.event(rita, "confirm", at(-20, 7, 4), value="run-1", via="page")
    w.event(rita, "unsubscribe", at(-18, 9), lesson=3, via="page")
    w.event(rita, "confirm", at(-1, 9, 4), value="run-2", via="page")
    rows["rita_run1_note"] = w.insert(
        "lesson_progress",
        subscriber_id=rita.id,
        lesson=1,
        run=1,
        note=encrypt("run one"),
        note_at=at(-19),
    )
    w.insert(
        "lesson_progress",
        subscriber_id=rita.id,
        lesson=1,
        run=2,
        checkin="lighter",
        checkin_at=at(-1, 20),
    )

    # An erased reader: anonymous events and an opt-out hash stay.
    w.event(None, "checkin", at(-30), lesson=3, value="lighter")
    w.event(None, "erase", at(-25), via="admin", operator_id=owner)
    w.insert(
        "suppressions",
        fingerprint=fingerprints([SECRET], "gone@example.com")[0],
        reason="unsubscribed",
        created_at=at(-25),
    )

    # A signup that arrived just before the upgrade and was not decided yet.
    rows["signup_request"] = w.insert(
        "signup_requests",
        email="sam@example.com",
        name="Sam",
        timezone="Europe/London",
        source="website",
        consent_source="hosted",
        consent_origin="https://harbor.example.org/course",
        consent_text_hash="c" * 64,
        created_at=at(0, 6, 59),
    )
    w.insert(
        "scheduler_ticks",
        worker="old-host:4242:abcdef",
        last_tick_at=at(0, 6, 59),
        last_summary="due=0 sent=0",
    )
    return w.population
