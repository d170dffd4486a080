"""A human notices, and private data is protected (issue 13): risk phrases, the "Needs a
look" list and its alert, encryption at rest and key rotation, retention, the consent
record, crisis resources for the reader's country, and the practice's footer settings.

The admin's side of the list (roles, marking items) is in test_care_page.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from course import crypto
from course.app import create_app
from course.care import (
    RiskPhrases,
    forget_old_marks,
    mark,
    needs_a_look,
    open_count,
    risk_phrases,
    send_alerts,
)
from course.config import Settings
from course.crypto import DataKeyError, generate_key
from course.keys import plain_values
from course.mail import transport_from_url
from course.mail.outbox import OutboxTransport
from course.models import (
    Base,
    CareAlert,
    CheckIn,
    ConsentText,
    Delivery,
    Event,
    LessonProgress,
    Reply,
    Subscriber,
    SubscriberStatus,
)
from course.privacy import anonymize_former_readers, forget_old_writing
from course.scheduler import build_sender, run_housekeeping
from tests.conftest import (
    DATA_KEY,
    CourseRunner,
    FakeClock,
    RecordingHandler,
    make_config,
    make_sender,
    outbox_messages,
)
from tests.helpers import confirm_like_a_person, html_part, link, local_path, parse, text_part
from tests.test_links import tick

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
PHRASES = risk_phrases(None)


# -- risk phrases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "note",
    [
        "Some days I want to END IT ALL.",
        "i keep thinking about killing myself",
        "I've been cutting myself again",
        "I can’t go on like this",  # a curly apostrophe, as phones type it
        "Honestly I feel like a burden to everyone",
        "He hits me when he is drunk",
        "Ich möchte sterben.",  # accents do not matter
        "Manchmal denke ich an Suizid",
    ],
)
def test_the_shipped_list_finds_what_guidance_calls_warning_signs(note: str) -> None:
    assert PHRASES.match(note), note


@pytest.mark.parametrize(
    "note",
    [
        "Felt calmer after writing.",
        "I want to live more gently with myself",
        "I'll skill myself up in communication",  # "skill" is not "kill"
        "The ending of the film made me cry",
        "",
    ],
)
def test_ordinary_notes_match_nothing(note: str) -> None:
    assert PHRASES.match(note) == []


def test_a_practice_list_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "phrases.txt"
    path.write_text("# ours\nnot safe at home\nverzweifel*\n", encoding="utf-8")
    ours = risk_phrases(path)
    assert [p.text for p in ours.match("I am NOT safe at home.")] == ["not safe at home"]
    assert ours.match("Ich bin verzweifelt") and not ours.match("I want to die")
    # Stored ids are shown as their phrase; an id from an older list is shown as unknown.
    ids = ",".join(p.id for p in ours.match("not safe at home")) + ",deadbeef"
    assert ours.text_of(ids) == ["not safe at home", "(phrase deadbeef)"]


def test_words_must_follow_each_other() -> None:
    phrases = RiskPhrases(["end* my life"])
    assert phrases.match("thinking of ending my life")
    assert not phrases.match("my life will not end")


# -- a reader, through the web -------------------------------------------------------------


def enrol(app: Flask, client: FlaskClient, email: str, **fields: str) -> dict[str, str]:
    """Sign up (JSON API), confirm, receive lesson 1; the links of lesson 1 by path."""
    settings: Settings = app.extensions["course"].settings
    before = len(outbox_messages(settings))
    client.post("/subscribe", json={"email": email, **fields})
    tick(app)
    confirmation = outbox_messages(settings)[before]
    assert confirm_like_a_person(client, link(confirmation, "confirm")).status_code == 200
    tick(app)
    lesson1 = outbox_messages(settings)[-1]
    assert parse(lesson1)["Subject"].startswith("Day 1")
    urls = {p: local_path(link(lesson1, p)) for p in ("checkin", "me")}
    urls["lesson"] = lesson1.decode()
    return urls


def care_app(tmp_path: Path, db_url: str, **overrides: Any) -> Iterator[Flask]:
    """An app that lets one test client sign up several readers."""
    overrides.setdefault("SUBSCRIBE_LIMIT_WITHOUT_ORIGIN", "100 per minute")
    overrides.setdefault("SUBSCRIBE_LIMIT_PER_CLIENT", "100 per minute")
    app = create_app(make_config(tmp_path, db_url, **overrides))
    yield app
    app.extensions["course"].engine.dispose()


@pytest.fixture
def any_app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """The app on SQLite and on PostgreSQL."""
    yield from care_app(tmp_path, db_url, CARE_EMAIL="care@harbor.example.org")


def test_stirred_and_risky_notes_reach_the_list_urgent_first(any_app: Flask, clock: Any) -> None:
    client = any_app.test_client()
    calm = enrol(any_app, client, "calm@example.com", name="Cal")
    stirred = enrol(any_app, client, "stirred@example.com", name="Sam")
    risky = enrol(any_app, client, "risky@example.com", name="Rae")
    client.post(calm["checkin"], data={"answer": "lighter", "note": "Felt calmer."})
    client.post(stirred["checkin"], data={"answer": "stirred"})
    client.post(risky["checkin"], data={"note": "Some days I just want to die."})

    sessions = any_app.extensions["course"].sessions
    with sessions() as session:
        items = needs_a_look(session, datetime.now(UTC), PHRASES)
        alerts = session.scalars(select(CareAlert)).all()
    assert [(i.kind, i.reader) for i in items] == [("note", "Rae"), ("stirred", "Sam")]
    assert items[0].urgent and items[0].phrases == ("want* to die",)
    assert not items[1].urgent and items[0].status == items[1].status == "new"
    # Only the risk phrase alerts; a stirred answer waits on the list.
    assert len(alerts) == 1 and alerts[0].item.startswith("note:")


def test_the_alert_is_grouped_and_never_contains_the_note(
    tmp_path: Path, db_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server
    for app in care_app(
        tmp_path,
        db_url,
        CARE_EMAIL="care@harbor.example.org",
        CARE_ALERT_MINUTES=30,
        MAIL_URL=f"outbox:{tmp_path / 'outbox'}",
    ):
        client = app.test_client()
        readers = [enrol(app, client, f"r{n}@example.com") for n in range(4)]
        settings: Settings = app.extensions["course"].settings
        sessions = app.extensions["course"].sessions
        relay = transport_from_url(f"smtp://127.0.0.1:{controller.port}")
        secret = "I want to kill myself tonight"

        # A burst of three notes: one alert.
        for reader in readers[:3]:
            client.post(reader["checkin"], data={"note": secret})
        now = datetime.now(UTC)
        assert send_alerts(sessions, settings, relay, now) == 3
        assert send_alerts(sessions, settings, relay, now + timedelta(minutes=1)) == 0
        assert len(handler.messages) == 1
        alert = handler.messages[0]
        assert alert.rcpt_tos == ["care@harbor.example.org"]
        body = text_part(alert.data)
        assert "3 notes or replies" in body
        assert "https://course.example.org/admin/care" in body
        assert secret.lower() not in alert.data.decode().lower()
        for word in ("kill", "tonight", "@example.com"):
            assert word not in alert.data.decode()

        # The next note waits for the grouping window, then comes as one more mail.
        client.post(readers[3]["checkin"], data={"note": "I want to die"})
        assert send_alerts(sessions, settings, relay, now + timedelta(minutes=29)) == 0
        assert send_alerts(sessions, settings, relay, now + timedelta(minutes=31)) == 1
        assert len(handler.messages) == 2
        assert "1 note or reply" in text_part(handler.messages[1].data)


def test_a_refused_alert_is_sent_on_the_next_run(
    app: Flask, client: FlaskClient, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server
    handler.reject_rcpt["care@harbor.example.org"] = "451 4.3.0 try again later"
    settings = app.extensions["course"].settings.model_copy(
        update={"care_email": "care@harbor.example.org"}
    )
    sessions = app.extensions["course"].sessions
    relay = transport_from_url(f"smtp://127.0.0.1:{controller.port}")
    reader = enrol(app, client, "ana@example.com")
    client.post(reader["checkin"], data={"note": "I feel there is no way out"})
    now = datetime.now(UTC)
    assert send_alerts(sessions, settings, relay, now) == 0
    with sessions() as session:
        assert session.scalars(select(CareAlert.sent_at)).all() == [None]
    handler.reject_rcpt.clear()
    assert send_alerts(sessions, settings, relay, now + timedelta(minutes=1)) == 1
    assert len(handler.messages) == 1


def test_without_a_care_address_nothing_is_sent_but_the_list_still_fills(
    app: Flask, client: FlaskClient, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    controller, handler = smtp_server
    settings = app.extensions["course"].settings
    assert settings.care_email == ""
    reader = enrol(app, client, "ana@example.com")
    client.post(reader["checkin"], data={"note": "I want to die"})
    sessions = app.extensions["course"].sessions
    relay = transport_from_url(f"smtp://127.0.0.1:{controller.port}")
    assert send_alerts(sessions, settings, relay, datetime.now(UTC)) == 0
    assert handler.messages == []
    with sessions() as session:
        assert [i.kind for i in needs_a_look(session, datetime.now(UTC), PHRASES)] == ["note"]


def test_the_note_form_says_who_reads_notes_and_when(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com")
    page = client.get(reader["checkin"]).get_data(as_text=True)
    assert "not monitored around the clock" in page
    settings = app.extensions["course"].settings
    assert settings.notes_notice in page


def test_the_stirred_page_leads_with_care(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com", timezone="Europe/London")
    page = client.post(reader["checkin"], data={"answer": "stirred"}).get_data(as_text=True)
    main = page.split("<main", 1)[1].split("</main>", 1)[0]
    # The crisis box comes first, with the reader's country's line, then a booking link and
    # the reassurance; the note form after them.
    crisis, booking = main.find("Samaritans"), main.find("/book/")
    assert 0 <= crisis < booking < main.find("<textarea")
    assert "normal" in main[: booking + 400].lower()


def test_old_marks_and_alerts_are_forgotten_once_off_the_list(
    app: Flask, client: FlaskClient
) -> None:
    reader = enrol(app, client, "ana@example.com")
    client.post(reader["checkin"], data={"answer": "stirred", "note": "I want to die"})
    sessions = app.extensions["course"].sessions
    now = datetime.now(UTC)
    with sessions() as session, session.begin():
        items = needs_a_look(session, now, PHRASES)
        for item in items:
            mark(session, item.item, "seen", operator_id=1, now=now)
        session.execute(update(CareAlert).values(sent_at=now))
    with sessions() as session, session.begin():
        # Within the window the marks stay: nothing comes back as new.
        assert forget_old_marks(session, now + timedelta(days=29)) == 0
        assert open_count(session, now + timedelta(days=29), PHRASES) == 0
    with sessions() as session, session.begin():
        assert forget_old_marks(session, now + timedelta(days=31)) == 3  # 2 marks, 1 alert
        assert needs_a_look(session, now + timedelta(days=31), PHRASES) == []


# -- encryption at rest -----------------------------------------------------------------------


def raw_values(sessions: sessionmaker[Session], sql: str) -> list[str]:
    with sessions() as session:
        return [row[0] for row in session.execute(text(sql))]


def add_reply(sessions: sessionmaker[Session], email: str, body: str, at: datetime = NOW) -> None:
    with sessions() as session, session.begin():
        sub = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        session.add(
            Reply(
                subscriber_id=sub.id,
                lesson=1,
                subject="Re: Day 1",
                text=body,
                received_at=at,
            )
        )


def test_a_raw_database_read_finds_no_note_text(any_app: Flask) -> None:
    client = any_app.test_client()
    reader = enrol(any_app, client, "ana@example.com")
    note = "My partner's name is Jordan and I feel small around them"
    client.post(reader["checkin"], data={"note": note})
    sessions = any_app.extensions["course"].sessions
    add_reply(sessions, "ana@example.com", "A private reply about Jordan")

    stored = raw_values(sessions, "select note from lesson_progress where note is not null")
    stored += raw_values(sessions, "select text from replies")
    stored += raw_values(sessions, "select subject from replies")
    assert len(stored) == 3
    for value in stored:
        assert value.startswith("gAAAAA") and "Jordan" not in value and "Day 1" not in value
    # Through the model (the app's key), the words are there.
    with sessions() as session:
        assert session.scalars(select(LessonProgress.note)).one() == note
    # A dump of the whole database file shows no note either (SQLite).
    url = any_app.extensions["course"].settings.database_url
    if url.startswith("sqlite"):
        assert b"Jordan" not in Path(url.removeprefix("sqlite:///")).read_bytes()


def test_keys_rotate_and_old_plain_notes_get_encrypted(any_app: Flask) -> None:
    client = any_app.test_client()
    reader = enrol(any_app, client, "ana@example.com")
    client.post(reader["checkin"], data={"note": "written with the first key"})
    sessions = any_app.extensions["course"].sessions
    add_reply(sessions, "ana@example.com", "a reply with the first key")
    # A note from before encryption existed, stored as plain text.
    with sessions() as session, session.begin():
        session.execute(
            text(
                "insert into replies (subscriber_id, lesson, subject, text, received_at) "
                "select id, 1, 'old', 'an old plain reply', :at from subscribers"
            ),
            {"at": NOW.replace(tzinfo=None)},
        )
    with sessions() as session:
        assert plain_values(session) == 2  # the old reply's subject and text

    new = generate_key()
    crypto.use_keys([new, DATA_KEY])
    try:
        result = CourseRunner(any_app).invoke(["keys", "rotate"])
        assert result.exit_code == 0, result.output
        assert "lesson_progress.note: 1" in result.output
        with sessions() as session:
            assert plain_values(session) == 0
        # Only the new key is needed now: the old one can go.
        crypto.use_keys([new])
        with sessions() as session:
            assert session.scalars(select(LessonProgress.note)).one() == (
                "written with the first key"
            )
            assert sorted(session.scalars(select(Reply.text))) == [
                "a reply with the first key",
                "an old plain reply",
            ]
        # A key that never encrypted anything reads nothing, and says why.
        crypto.use_keys([generate_key()])
        with sessions() as session, pytest.raises(DataKeyError, match="COURSE_DATA_KEYS"):
            session.scalars(select(LessonProgress.note)).one()
    finally:
        crypto.use_keys([DATA_KEY])


def test_production_without_a_data_key_does_not_start(tmp_path: Path, sqlite_url: str) -> None:
    config = make_config(tmp_path, sqlite_url)
    del config["DATA_KEYS"]
    with pytest.raises(Exception, match="COURSE_DATA_KEYS"):
        create_app(config)
    with pytest.raises(Exception, match="Fernet key"):
        create_app({**config, "DATA_KEYS": "not-a-key"})


def test_keys_generate_prints_a_usable_key(runner: CourseRunner) -> None:
    result = runner.invoke(["keys", "generate"])
    assert result.exit_code == 0
    key = result.output.strip()
    crypto.check_keys([key])
    assert runner.invoke(["keys", "generate"]).output.strip() != key


# -- retention -------------------------------------------------------------------------------


def _age(sessions: sessionmaker[Session], email: str, **values: Any) -> None:
    with sessions() as session, session.begin():
        sub = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        for key, value in values.items():
            setattr(sub, key, value)


def test_former_readers_are_anonymised_and_their_counts_stay(any_app: Flask) -> None:
    client = any_app.test_client()
    sessions = any_app.extensions["course"].sessions
    readers = {
        name: enrol(any_app, client, f"{name}@example.com", name=f"{name.title()}Person")
        for name in ("done", "left", "recent", "active", "paused")
    }
    for reader in readers.values():
        client.post(reader["checkin"], data={"answer": "stirred", "note": "private words"})
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=400)
    _age(sessions, "done@example.com", status=SubscriberStatus.COMPLETED, completed_at=long_ago)
    _age(
        sessions,
        "left@example.com",
        status=SubscriberStatus.UNSUBSCRIBED,
        unsubscribed_at=long_ago,
    )
    _age(
        sessions,
        "recent@example.com",
        status=SubscriberStatus.COMPLETED,
        completed_at=now - timedelta(days=300),
    )
    _age(sessions, "paused@example.com", status=SubscriberStatus.PAUSED)
    with sessions() as session, session.begin():
        left = select(Subscriber.id).where(Subscriber.email == "left@example.com")
        session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id.in_(left.scalar_subquery()))
            .values(last_error="550 5.1.1 <left@example.com>: no such user")
        )
    with sessions() as session:
        events_before = session.scalar(select(func.count()).select_from(Event))
        left_id = session.scalars(
            select(Subscriber.id).where(Subscriber.email == "left@example.com")
        ).one()

    sender = build_sender(any_app.extensions["course"].settings)
    try:
        sender.clock = lambda: now  # type: ignore[method-assign]
        run_housekeeping(sender)
    finally:
        sender.sessions.kw["bind"].dispose()

    with sessions() as session:
        subs = {s.id: s for s in session.scalars(select(Subscriber))}
        emails = sorted(s.email for s in subs.values())
        assert "done@example.com" not in emails and "left@example.com" not in emails
        assert {"recent@example.com", "active@example.com", "paused@example.com"} <= set(emails)
        gone = [s for s in subs.values() if s.anonymized_at is not None]
        assert len(gone) == 2
        for sub in gone:
            assert sub.email.endswith("@invalid") and sub.name is None
            assert sub.consent_origin is None and sub.country is None
            rows = session.scalars(
                select(LessonProgress).where(LessonProgress.subscriber_id == sub.id)
            ).all()
            # What they answered stays as a count; what they wrote is gone.
            assert [r.checkin for r in rows] == [CheckIn.STIRRED]
            assert [r.note for r in rows] == [None]
        assert session.scalar(select(func.count()).select_from(Event)) >= events_before
        # The one who left stays opted out: an import can never enrol them again.
        assert subs[left_id].status == SubscriberStatus.UNSUBSCRIBED
        # Nothing anywhere in the database names them any more.
        for table in Base.metadata.sorted_tables:
            dump = repr(session.execute(select(table)).all())
            for trace in ("done@example.com", "left@example.com", "DonePerson", "LeftPerson"):
                assert trace not in dump, (table.name, trace)
        kept = session.scalars(
            select(LessonProgress.note)
            .join(Subscriber, Subscriber.id == LessonProgress.subscriber_id)
            .where(Subscriber.email == "recent@example.com")
        ).one()
        assert kept == "private words"


def test_anonymised_links_stop_working(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com")
    sessions = app.extensions["course"].sessions
    _age(
        sessions,
        "ana@example.com",
        status=SubscriberStatus.COMPLETED,
        completed_at=datetime.now(UTC) - timedelta(days=400),
    )
    with sessions() as session, session.begin():
        assert anonymize_former_readers(session, datetime.now(UTC), 12, ["k" * 32]) == 1
    assert client.get(reader["me"]).status_code == 404


def test_notes_have_a_shorter_limit_of_their_own(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com")
    client.post(reader["checkin"], data={"answer": "same", "note": "an old note"})
    sessions = app.extensions["course"].sessions
    note_at = datetime.now(UTC)
    add_reply(sessions, "ana@example.com", "an old reply", at=note_at - timedelta(days=30))
    with sessions() as session, session.begin():
        assert forget_old_writing(session, note_at + timedelta(days=149), 180) == 0
    with sessions() as session, session.begin():
        # The reply, 30 days older, goes first; the note after its own 180 days.
        assert forget_old_writing(session, note_at + timedelta(days=151), 180) == 1
        assert forget_old_writing(session, note_at + timedelta(days=181), 180) == 1
    with sessions() as session:
        row = session.scalars(select(LessonProgress)).one()
        assert row.note is None and row.checkin == "same"
        assert session.scalars(select(Reply)).all() == []
        # The reader is still taking the course: only the writing went.
        assert session.scalars(select(Subscriber.status)).one() == SubscriberStatus.ACTIVE


# -- consent ---------------------------------------------------------------------------------


def test_the_consent_record_is_in_the_export(app: Flask, client: FlaskClient) -> None:
    settings: Settings = app.extensions["course"].settings
    page = client.get("/").get_data(as_text=True)
    assert str(escape(settings.signup_consent_text)) in page
    reader = enrol(app, client, "ana@example.com", source="instagram")
    data = json.loads(client.get(reader["me"] + "/data.json").get_data(as_text=True))
    consent = data["consent"]
    assert consent["confirmed_at"] and consent["source"] == "api"
    assert consent["wording"] == settings.signup_consent_text
    assert (
        consent["wording_sha256"]
        == hashlib.sha256(settings.signup_consent_text.encode()).hexdigest()
    )
    # No raw IP address anywhere in what is kept about the reader.
    assert "127.0.0.1" not in json.dumps(data)
    with app.extensions["course"].sessions() as session:
        stored = session.scalars(select(ConsentText)).one()
        assert stored.text == settings.signup_consent_text


def test_a_changed_wording_is_kept_next_to_the_old_one(tmp_path: Path, sqlite_url: str) -> None:
    first = make_config(tmp_path, sqlite_url, SIGNUP_CONSENT_TEXT="Wording one.")
    app = create_app(first)
    enrol(app, app.test_client(), "one@example.com")
    app.extensions["course"].engine.dispose()
    app = create_app({**first, "SIGNUP_CONSENT_TEXT": "Wording two."})
    try:
        client = app.test_client()
        two = enrol(app, client, "two@example.com")
        data = json.loads(client.get(two["me"] + "/data.json").get_data(as_text=True))
        assert data["consent"]["wording"] == "Wording two."
        with app.extensions["course"].sessions() as session:
            assert sorted(session.scalars(select(ConsentText.text))) == [
                "Wording one.",
                "Wording two.",
            ]
    finally:
        app.extensions["course"].engine.dispose()


# -- crisis resources for the reader ------------------------------------------------------


def test_crisis_resources_follow_the_time_zone_and_the_readers_choice(
    app: Flask, client: FlaskClient
) -> None:
    berlin = enrol(app, client, "ana@example.com", timezone="Europe/Berlin")
    assert "TelefonSeelsorge" in berlin["lesson"]
    assert "988" not in text_part(berlin["lesson"].encode())
    assert "TelefonSeelsorge" in client.get(berlin["me"]).get_data(as_text=True)

    # The reader moves to the UK: their pages and next emails follow.
    response = client.post(berlin["me"] + "/country", data={"country": "GB"})
    assert response.status_code == 303
    page = client.get(berlin["me"]).get_data(as_text=True)
    assert "Samaritans" in page and "TelefonSeelsorge" not in page
    with app.extensions["course"].sessions() as session:
        assert session.scalars(select(Subscriber.country)).one() == "GB"

    # No guess for a zone that names no country: the worldwide directory.
    utc = enrol(app, client, "bo@example.com", timezone="UTC")
    assert "findahelpline.com" in utc["lesson"]
    # A country outside the list is refused, and nothing changes.
    bad = client.post(berlin["me"] + "/country", data={"country": "XX"})
    assert bad.status_code == 400
    with app.extensions["course"].sessions() as session:
        assert set(session.scalars(select(Subscriber.country))) == {"GB", None}


def test_the_next_lesson_follows_the_readers_choice(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com", timezone="America/Chicago")
    assert "988" in text_part(reader["lesson"].encode())
    client.post(reader["me"] + "/country", data={"country": "IE"})
    settings: Settings = app.extensions["course"].settings
    two_days_on = FakeClock(datetime.now(UTC) + timedelta(days=2))
    outbox = OutboxTransport(settings.mail_url.removeprefix("outbox:"))
    make_sender(settings, outbox, two_days_on).tick()
    lesson2 = outbox_messages(settings)[-1]
    assert parse(lesson2)["Subject"].startswith("Day 2")
    assert "Samaritans" in text_part(lesson2) and "988" not in text_part(lesson2)


# -- the practice's footer ----------------------------------------------------------------


def test_footer_settings_appear_on_the_form_the_pages_and_the_emails(
    tmp_path: Path, sqlite_url: str
) -> None:
    for app in care_app(
        tmp_path,
        sqlite_url,
        PRIVACY_URL="https://harbor.example.org/privacy",
        IMPRINT_URL="https://harbor.example.org/imprint",
        POSTAL_ADDRESS="12 Quay Street, Bristol BS1 4AA",
    ):
        client = app.test_client()
        form = client.get("/").get_data(as_text=True)
        assert 'href="https://harbor.example.org/privacy"' in form
        assert 'href="https://harbor.example.org/imprint"' in form
        assert "12 Quay Street" in form
        reader = enrol(app, client, "ana@example.com")
        page = client.get(reader["me"]).get_data(as_text=True)
        assert "https://harbor.example.org/imprint" in page and "12 Quay Street" in page
        for mail in outbox_messages(app.extensions["course"].settings):
            assert "12 Quay Street" in text_part(mail) and "12 Quay Street" in html_part(mail)
            assert "https://harbor.example.org/privacy" in text_part(mail)
            assert 'href="https://harbor.example.org/imprint"' in html_part(mail)


def test_unset_footer_settings_leave_no_empty_links(app: Flask, client: FlaskClient) -> None:
    reader = enrol(app, client, "ana@example.com")
    page = client.get(reader["me"]).get_data(as_text=True)
    assert "Legal notice" not in page and 'href=""' not in page
    for mail in outbox_messages(app.extensions["course"].settings):
        assert "Legal notice" not in text_part(mail) and 'href=""' not in html_part(mail)
