"""Operator commands: admin create, stats, export, import, forget, lessons check."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.security import check_password_hash

from course.app import create_app
from course.config import Settings
from course.importer import ImportAborted, Row, import_rows
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    Operator,
    Subscriber,
    SubscriberStatus,
)
from course.schedule import next_calendar_send
from tests.conftest import CourseRunner, FakeClock, first_course, make_config
from tests.helpers import REPO

PASSWORD = "correct horse battery staple"


# -- admin create -----------------------------------------------------------------------------


def test_admin_create_makes_an_operator_without_showing_the_password(
    runner: CourseRunner, sessions: sessionmaker[Session]
) -> None:
    result = runner.invoke(
        args=["admin", "create", "Kim@Harbor.example.org", "--timezone", "Europe/Berlin"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created operator Kim@harbor.example.org." in result.output
    assert PASSWORD not in result.output
    with sessions() as s:
        operator = s.scalars(select(Operator)).one()
    assert operator.email == "Kim@harbor.example.org"
    assert operator.timezone == "Europe/Berlin"
    assert PASSWORD not in operator.password_hash
    assert check_password_hash(operator.password_hash, PASSWORD)


def test_admin_create_refuses_a_short_password(
    runner: CourseRunner, sessions: sessionmaker[Session]
) -> None:
    result = runner.invoke(
        args=["admin", "create", "kim@harbor.example.org"], input="short-pw\nshort-pw\n"
    )
    assert result.exit_code == 1
    assert "at least 12 characters" in result.output
    assert "short-pw" not in result.output
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Operator)) == 0


def test_admin_create_refuses_a_duplicate(
    runner: CourseRunner, sessions: sessionmaker[Session]
) -> None:
    first = runner.invoke(
        args=["admin", "create", "kim@harbor.example.org"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert first.exit_code == 0, first.output
    again = runner.invoke(
        args=["admin", "create", "KIM@harbor.example.org"],
        input="another password 1\nanother password 1\n",
    )
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert "another password 1" not in again.output
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Operator)) == 1


def test_admin_create_checks_the_timezone_and_address_before_asking(
    runner: CourseRunner,
) -> None:
    bad_zone = runner.invoke(
        args=["admin", "create", "kim@harbor.example.org", "--timezone", "Mars/Olympus"]
    )
    assert bad_zone.exit_code == 2 and "IANA" in bad_zone.output
    bad_address = runner.invoke(args=["admin", "create", "not-an-address"])
    assert bad_address.exit_code == 2
    assert "Password" not in bad_address.output


# -- stats --------------------------------------------------------------------------------------


def _at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def _reader(
    s: Session, email: str, created: datetime, source: str, *, confirmed: bool = True
) -> Subscriber:
    sub = Subscriber(
        course_id=1,
        email=email,
        timezone="UTC",
        source=source,
        status=SubscriberStatus.ACTIVE if confirmed else SubscriberStatus.PENDING,
        created_at=created,
        confirmed_at=created if confirmed else None,
        confirm_count=1,
    )
    s.add(sub)
    s.flush()
    return sub


def _sent(s: Session, sub: Subscriber, *numbers: int) -> None:
    for n in numbers:
        at = sub.created_at + timedelta(days=n)
        s.add(
            Delivery(
                subscriber_id=sub.id,
                kind=DeliveryKind.LESSON,
                number=n,
                status=DeliveryStatus.SENT,
                due_at=at,
                sent_at=at,
            )
        )


def _event(s: Session, sub: Subscriber | None, kind: EventKind, lesson: int) -> None:
    s.add(
        Event(
            subscriber_id=sub.id if sub else None,
            course_id=1,  # every event names its course; an erased reader's keeps it
            kind=kind,
            lesson=lesson,
            via="link",
            created_at=_at(20),
        )
    )


@pytest.fixture
def known_numbers(sessions: sessionmaker[Session]) -> None:
    """Four readers and one erased reader's events, with hand-counted results."""
    with sessions() as s, s.begin():
        ana = _reader(s, "ana@example.com", _at(1), "web")
        _sent(s, ana, 1, 2)
        s.add(LessonProgress(subscriber_id=ana.id, lesson=1, done_at=_at(3), checkin="lighter"))
        s.add(LessonProgress(subscriber_id=ana.id, lesson=2, checkin="stirred"))
        _event(s, ana, EventKind.VIEW, 1)
        _event(s, ana, EventKind.BOOK, 1)
        _event(s, ana, EventKind.BOOK, 1)
        ben = _reader(s, "ben@example.com", _at(1), "web")
        ben.status = SubscriberStatus.UNSUBSCRIBED
        _sent(s, ben, 1)
        s.add(LessonProgress(subscriber_id=ben.id, lesson=1, checkin="same"))
        _event(s, ben, EventKind.UNSUBSCRIBE, 1)
        _reader(s, "cleo@example.com", _at(5), "ads", confirmed=False)
        dan = _reader(s, "dan@example.com", _at(5), "web")
        _sent(s, dan, 1, 2, 3, 4, 5)
        dan.status = SubscriberStatus.COMPLETED
        dan.completed_at = _at(11)
        _event(s, None, EventKind.BOOK, 2)  # an erased reader's click


def _funnel(output: str) -> dict[str, tuple[str, str]]:
    section = output.split("Funnel", 1)[1].split("Per lesson", 1)[0]
    rows = {}
    for line in section.strip().splitlines()[2:]:
        label, count, share = line.rsplit(None, 2)
        rows[label.strip()] = (count, share)
    return rows


def _per_lesson(output: str) -> dict[int, list[int]]:
    section = output.split("Per lesson", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in section.strip().splitlines()[2:]:
        cells = line.split()
        rows[int(cells[0])] = [int(c) for c in cells[-8:]]
    return rows


def test_stats_prints_the_funnel_and_per_lesson_numbers(
    runner: CourseRunner, known_numbers: None
) -> None:
    result = runner.invoke(args=["stats"])
    assert result.exit_code == 0, result.output
    funnel = _funnel(result.output)
    assert funnel["Signed up"] == ("4", "100.0%")
    assert funnel["Confirmed"] == ("3", "75.0%")
    assert funnel["Received lesson 1"] == ("3", "75.0%")
    assert funnel["Received lesson 2"] == ("2", "50.0%")
    assert funnel["Received lesson 5"] == ("1", "25.0%")
    assert funnel["Completed"] == ("1", "25.0%")
    assert "Booked a session" not in funnel  # not a step of the funnel: shown apart
    lessons = _per_lesson(result.output)
    # delivered, viewed, done, lighter, same, stirred, booking clicks (once per reader and
    # lesson: ana clicked twice), unsubscribes
    assert lessons[1] == [3, 1, 1, 1, 1, 0, 1, 1]
    assert lessons[2] == [2, 0, 0, 0, 0, 1, 1, 0]  # the erased reader's click counts
    assert lessons[5] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert "Where insecurity comes from" in result.output  # titles from the lesson files


def test_stats_filters_by_source_and_signup_days(runner: CourseRunner, known_numbers: None) -> None:
    web = runner.invoke(args=["stats", "--source", "web"])
    assert web.exit_code == 0, web.output
    assert _funnel(web.output)["Signed up"] == ("3", "100.0%")
    assert _funnel(web.output)["Confirmed"] == ("3", "100.0%")
    # With a filter, anonymous events no longer belong to anyone counted.
    assert _per_lesson(web.output)[2][6] == 0
    later = runner.invoke(args=["stats", "--from", "2026-03-04", "--to", "2026-03-31"])
    assert later.exit_code == 0, later.output
    funnel = _funnel(later.output)
    assert funnel["Signed up"] == ("2", "100.0%")
    assert funnel["Received lesson 1"] == ("1", "50.0%")
    assert "2026-03-04" in later.output
    backwards = runner.invoke(args=["stats", "--from", "2026-03-04", "--to", "2026-03-01"])
    assert backwards.exit_code == 2


def test_stats_on_an_empty_database(runner: CourseRunner) -> None:
    result = runner.invoke(args=["stats"])
    assert result.exit_code == 0, result.output
    assert _funnel(result.output)["Signed up"] == ("0", "-")


# -- export ---------------------------------------------------------------------------------


def _sections(output: str) -> tuple[list[list[str]], list[list[str]]]:
    # CliRunner shows CRLF line ends as LF.
    subscribers, events = output.split("\n\n", 1)
    return list(csv.reader(io.StringIO(subscribers))), list(csv.reader(io.StringIO(events)))


def test_export_writes_subscribers_then_events(runner: CourseRunner, known_numbers: None) -> None:
    result = runner.invoke(args=["export"])
    assert result.exit_code == 0, result.output
    subscribers, events = _sections(result.stdout)
    assert subscribers[0] == [
        "public_id",
        "email",
        "name",
        "timezone",
        "send_hour",
        "source",
        "status",
        "created_at",
        "confirmed_at",
        "completed_at",
        "unsubscribed_at",
        "lessons_received",
        "course",
    ]
    by_email = {row[1]: dict(zip(subscribers[0], row, strict=True)) for row in subscribers[1:]}
    assert set(by_email) == {
        "ana@example.com",
        "ben@example.com",
        "cleo@example.com",
        "dan@example.com",
    }
    assert by_email["dan@example.com"]["lessons_received"] == "5"
    assert by_email["ana@example.com"]["lessons_received"] == "2"
    assert by_email["cleo@example.com"]["lessons_received"] == "0"
    assert by_email["cleo@example.com"]["confirmed_at"] == ""
    assert by_email["ana@example.com"]["created_at"] == "2026-03-01T09:00:00Z"
    assert events[0] == [
        "id",
        "subscriber_public_id",
        "lesson",
        "kind",
        "value",
        "via",
        "operator_id",
        "created_at",
        "course",
    ]
    assert len(events) == 1 + 5
    kinds = [row[3] for row in events[1:]]
    assert kinds.count("book") == 3


def test_export_keeps_an_erased_readers_events_anonymous(
    runner: CourseRunner, known_numbers: None, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s:
        ana_id = s.scalars(
            select(Subscriber.public_id).where(Subscriber.email == "ana@example.com")
        ).one()
    assert runner.invoke(args=["forget", "ana@example.com", "--yes"]).exit_code == 0
    result = runner.invoke(args=["export"])
    assert result.exit_code == 0, result.output
    assert "ana@example.com" not in result.output
    assert ana_id not in result.output
    subscribers, events = _sections(result.stdout)
    assert len(subscribers) == 1 + 4  # hers is still a row, naming nobody (privacy.erase)
    header = subscribers[0]
    (erased,) = [
        dict(zip(header, r, strict=True))
        for r in subscribers[1:]
        if ana_id != r[0] and r[header.index("email")].startswith("anonymized-")
    ]
    assert erased["name"] == "" and erased["status"] == "erased"
    rows = [dict(zip(events[0], row, strict=True)) for row in events[1:]]
    assert len(rows) == 5  # the events are all still there
    theirs = [r for r in rows if r["subscriber_public_id"] == erased["public_id"]]
    assert sorted(r["kind"] for r in theirs) == ["book", "book", "view"]
    # The click of a reader erased before erasure kept rows belongs to nobody.
    assert [r["kind"] for r in rows if r["subscriber_public_id"] == ""] == ["book"]


def test_export_guards_against_formula_injection(
    runner: CourseRunner, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    names = ['=HYPERLINK("http://x")', "+1 555", "-2", "@SUM(A1)", "\tTab", "\rCR", "Ann-Marie"]
    with sessions() as s, s.begin():
        for i, name in enumerate(names):
            sub = _reader(s, f"r{i}@example.com", _at(1), "web")
            sub.name = name
    out = tmp_path / "export.csv"
    result = runner.invoke(args=["export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "export-events.csv").exists()
    assert out.stat().st_mode & 0o077 == 0  # personal data: readable by the owner only
    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    exported = [row["name"] for row in rows]
    assert exported == [
        '\'=HYPERLINK("http://x")',
        "'+1 555",
        "'-2",
        "'@SUM(A1)",
        "'\tTab",
        "'\rCR",
        "Ann-Marie",
    ]
    assert "Wrote 7 subscribers" in result.output


# -- import -----------------------------------------------------------------------------------


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding, newline="")
    return path


def _subscribers(sessions: sessionmaker[Session]) -> dict[str, Subscriber]:
    with sessions() as s:
        return {sub.email: sub for sub in s.scalars(select(Subscriber))}


def _deliveries(sessions: sessionmaker[Session], email: str) -> list[Delivery]:
    with sessions() as s:
        return list(s.scalars(select(Delivery).join(Subscriber).where(Subscriber.email == email)))


def test_import_enrols_good_rows_with_a_confirmation_email(
    runner: CourseRunner, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = _csv(
        tmp_path / "list.csv",
        "Email,Name,timezone,send_hour,source,phone\n"
        "ana@example.com,Ana,Europe/Berlin,7,newsletter,123\n"
        "\n"
        "ben@example.com,,,,,\n",
    )
    result = runner.invoke(args=["import", str(path), "--source", "old-list"])
    assert result.exit_code == 0, result.output
    assert "Imported 2, skipped 0." in result.output
    subs = _subscribers(sessions)
    ana, ben = subs["ana@example.com"], subs["ben@example.com"]
    assert (ana.name, ana.timezone, ana.send_hour, ana.source) == (
        "Ana",
        "Europe/Berlin",
        7,
        "newsletter",
    )
    assert (ben.name, ben.timezone, ben.send_hour, ben.source) == (None, "UTC", None, "old-list")
    assert ana.status == ben.status == SubscriberStatus.PENDING
    [confirmation] = _deliveries(sessions, "ana@example.com")
    assert (confirmation.kind, confirmation.status) == (DeliveryKind.CONFIRM, DeliveryStatus.QUEUED)


def test_import_skips_bad_rows_and_duplicates_with_reasons(
    runner: CourseRunner, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions() as s, s.begin():
        gone = _reader(s, "gone@example.com", _at(1), "web")
        gone.status = SubscriberStatus.UNSUBSCRIBED
    path = _csv(
        tmp_path / "list.csv",
        "email,name,timezone,send_hour\n"
        "ok@example.com,Ok,,\n"  # line 2
        "not an address,,,\n"  # line 3
        "tz@example.com,,Mars/Olympus,\n"  # line 4
        "hour@example.com,,,24\n"  # line 5
        ",Nobody,,\n"  # line 6
        "OK@Example.com,Again,,\n"  # line 7: same mailbox as line 2
        "Gone@example.com,,,\n"  # line 8: unsubscribed earlier
        '"=cmd@example.com",,,\n'  # line 9: valid, and a formula for the report
        "=cmd@example.com,,,\n",  # line 10
    )
    report = tmp_path / "skipped.csv"
    result = runner.invoke(args=["import", str(path), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "Imported 2, skipped 7." in result.output
    assert "line 3: email: That doesn't look like a valid email address" in result.output
    assert "line 4: timezone: must be an IANA time zone name" in result.output
    assert "line 5: send_hour: must be a whole number from 0 to 23" in result.output
    assert "line 6: email: Please enter your email address." in result.output
    assert "line 7: the address appears earlier in the file" in result.output
    assert "line 8: already in the database (unsubscribed)" in result.output
    assert "line 10: the address appears earlier in the file" in result.output
    subs = _subscribers(sessions)
    assert set(subs) == {"ok@example.com", "gone@example.com", "=cmd@example.com"}
    assert subs["ok@example.com"].name == "Ok"  # the first row wins
    assert subs["gone@example.com"].status == SubscriberStatus.UNSUBSCRIBED  # not put back
    with report.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["line"]) for r in rows] == [3, 4, 5, 6, 7, 8, 10]
    assert rows[-1]["email"] == "'=cmd@example.com"  # guarded in the spreadsheet file


def test_import_consented_starts_the_course_at_the_readers_send_hour(
    app: Flask, sessions: sessionmaker[Session], settings: Settings
) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    rows = [
        Row(2, {"email": "tokyo@example.com", "timezone": "Asia/Tokyo", "send_hour": "9"}),
        Row(3, {"email": "utc@example.com"}),
    ]
    result = import_rows(
        sessions,
        rows,
        settings,
        clock,
        course=first_course(settings),
        consented=True,
        source="clinic",
    )
    assert (result.imported, result.skipped) == (2, [])
    subs = _subscribers(sessions)
    for sub in subs.values():
        assert sub.status == SubscriberStatus.ACTIVE
        assert sub.confirmed_at == clock.now
        assert sub.source == "clinic"
    [tokyo] = _deliveries(sessions, "tokyo@example.com")
    assert (tokyo.kind, tokyo.number, tokyo.status) == ("lesson", 1, "queued")
    # 07:00 UTC is 16:00 in Tokyo: the next 09:00 there is tomorrow, 00:00 UTC.
    assert tokyo.due_at == datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
    assert tokyo.due_at == next_calendar_send(clock.now, ZoneInfo("Asia/Tokyo"), 9)
    [utc] = _deliveries(sessions, "utc@example.com")
    assert utc.due_at == datetime(2026, 3, 2, settings.send_hour, 0, tzinfo=UTC)
    assert utc.due_at > clock.now  # not on the next tick


def test_import_consented_in_interval_mode_is_due_now(
    app: Flask, sessions: sessionmaker[Session], settings: Settings
) -> None:
    clock = FakeClock()
    fast = settings.model_copy(update={"lesson_interval": 30.0})
    import_rows(
        sessions,
        [Row(2, {"email": "ana@example.com"})],
        fast,
        clock,
        course=first_course(fast),
        consented=True,
    )
    [lesson] = _deliveries(sessions, "ana@example.com")
    assert lesson.due_at == clock.now


def test_import_consented_from_the_cli_sends_no_confirmation(
    runner: CourseRunner, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = _csv(tmp_path / "list.csv", "email\nana@example.com\n")
    result = runner.invoke(args=["import", str(path), "--consented"])
    assert result.exit_code == 0, result.output
    assert _subscribers(sessions)["ana@example.com"].status == SubscriberStatus.ACTIVE
    kinds = [d.kind for d in _deliveries(sessions, "ana@example.com")]
    assert kinds == [DeliveryKind.LESSON]


def test_import_reads_a_bom_and_semicolons(
    runner: CourseRunner, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = _csv(
        tmp_path / "excel.csv", "email;name\r\nzoë@example.com;Zoë\r\n", encoding="utf-8-sig"
    )
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    result = runner.invoke(args=["import", str(path)])
    assert result.exit_code == 0, result.output
    assert _subscribers(sessions)["zoë@example.com"].name == "Zoë"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,phone\nAna,123\n", "no 'email' column"),
        (b"email,name\nana@example.com,Ana\nben@example.com,\xff\xfe\n", "not UTF-8"),
        (b"", "the file is empty"),
        (b"email\nana@example.com\nb\x00en@example.com\n", "NUL"),
    ],
)
def test_import_refuses_an_unreadable_file_and_imports_nothing(
    runner: CourseRunner,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    content: bytes,
    message: str,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = runner.invoke(args=["import", str(path)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Nothing was imported." in result.output
    assert _subscribers(sessions) == {}


def test_import_refuses_a_bad_source_tag(runner: CourseRunner, tmp_path: Path) -> None:
    path = _csv(tmp_path / "list.csv", "email\nana@example.com\n")
    result = runner.invoke(args=["import", str(path), "--source", "no spaces please"])
    assert result.exit_code == 2
    assert "--source" in result.output


@pytest.mark.slow
def test_a_large_import_enrols_everyone_once(
    runner: CourseRunner, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    lines = ["email,name"]
    lines += [f"reader{i}@example.com,Reader {i}" for i in range(4000)]
    # The last thousand rows repeat earlier readers with different casing.
    lines += [f"Reader{i}@Example.com,Again {i}" for i in range(1000)]
    path = _csv(tmp_path / "big.csv", "\n".join(lines) + "\n")
    report = tmp_path / "skipped.csv"
    result = runner.invoke(args=["import", str(path), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "Imported 4000, skipped 1000." in result.output
    assert result.output.count("the address appears earlier in the file") == 50
    assert "... and 950 more." in result.output
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 4000
        assert s.scalar(select(func.count(func.distinct(func.lower(Subscriber.email))))) == 4000
        assert s.scalar(select(func.count()).select_from(Delivery)) == 4000
        assert s.scalar(select(func.count()).where(Subscriber.name.like("Again%"))) == 0
    with report.open(encoding="utf-8-sig", newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 1000


def _rows(n: int) -> Iterator[Row]:
    for i in range(n):
        yield Row(i + 2, {"email": f"r{i}@example.com"})


def test_a_failing_row_keeps_the_rows_before_it(
    app: Flask, sessions: sessionmaker[Session], settings: Settings
) -> None:
    calls = 0
    now = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)

    def clock() -> datetime:
        nonlocal calls
        calls += 1
        if calls == 7:
            raise RuntimeError("the clock broke")
        return now

    with pytest.raises(ImportAborted) as caught:
        import_rows(
            sessions, _rows(10), settings, clock, course=first_course(settings), batch_size=4
        )
    assert caught.value.line == 8  # the seventh row
    assert caught.value.result.imported == 6
    assert sorted(_subscribers(sessions)) == sorted(f"r{i}@example.com" for i in range(6))


def test_a_concurrent_signup_costs_only_its_own_row(
    app: Flask,
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with sessions() as s, s.begin():
        _reader(s, "r1@example.com", _at(1), "web")
    # As if the address signed up on the site between the import's lookup and its insert.
    monkeypatch.setattr("course.importer.find_by_email", lambda session, email, course_id: None)
    result = import_rows(
        sessions,
        _rows(3),
        settings,
        FakeClock(),
        course=first_course(settings),
        consented=True,
        batch_size=2,
    )
    assert result.imported == 2
    assert [(s.line, s.reason) for s in result.skipped] == [
        (3, "already in the database (signed up just now)")
    ]
    assert set(_subscribers(sessions)) == {"r0@example.com", "r1@example.com", "r2@example.com"}


# -- forget -------------------------------------------------------------------------------------


def test_forget_erases_the_reader(
    runner: CourseRunner, known_numbers: None, sessions: sessionmaker[Session]
) -> None:
    declined = runner.invoke(args=["forget", "ana@example.com"], input="n\n")
    assert declined.exit_code == 1
    assert "ana@example.com" in _subscribers(sessions)
    result = runner.invoke(args=["forget", "ANA@Example.com"], input="y\n")
    assert result.exit_code == 0, result.output
    assert "Erased." in result.output
    assert "ana@example.com" not in result.output.lower()
    assert "ana@example.com" not in _subscribers(sessions)
    with sessions() as s:
        # Her progress stays as an anonymous count, without anything she wrote.
        assert s.scalar(select(func.count()).select_from(LessonProgress)) == 3  # ana's 2, ben's
        assert s.scalars(select(LessonProgress.note)).all() == [None, None, None]
        # Her events stay with her anonymous row; the one without a reader is the click of
        # someone erased before erasures kept rows (known_numbers).
        kinds = s.scalars(select(Event.kind).where(Event.subscriber_id.is_(None))).all()
        assert kinds == [EventKind.BOOK]


def test_forget_an_unknown_address(runner: CourseRunner, known_numbers: None) -> None:
    result = runner.invoke(args=["forget", "nobody@example.com", "--yes"])
    assert result.exit_code == 1
    assert "No subscriber with that address." in result.output
    assert "nobody@example.com" not in result.output


# -- lessons check ------------------------------------------------------------------------------


def test_lessons_check_passes_the_course(runner: CourseRunner) -> None:
    result = runner.invoke(args=["lessons", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.count("OK lesson") == 5
    assert "OK lesson 3: Becoming kinder to yourself" in result.output
    assert "BROKEN" not in result.output


@pytest.fixture
def broken_lessons(tmp_path: Path, sqlite_url: str) -> Iterator[Flask]:
    folder = tmp_path / "lessons"
    folder.mkdir()
    shutil.copy(REPO / "lessons" / "course.yaml", folder)
    shutil.copy(REPO / "lessons" / "01-where-insecurity-comes-from.md", folder)
    (folder / "02-bad-yaml.md").write_text(
        '---\nkey: 2\nsubject: "Day {day}: unclosed\ntitle: [oops\n---\nText.\n',
        encoding="utf-8",
    )
    (folder / "03-no-subject.md").write_text(
        "---\nkey: 3\ntitle: Missing subject\n---\nText.\n", encoding="utf-8"
    )
    application = create_app(make_config(tmp_path, sqlite_url, LESSONS_DIR=str(folder)))
    yield application
    application.extensions["course"].engine.dispose()


def test_lessons_check_reports_broken_files(broken_lessons: Flask) -> None:
    result = CourseRunner(broken_lessons).invoke(args=["lessons", "check"])
    assert result.exit_code == 1
    assert "BROKEN 02-bad-yaml.md: the front matter is not valid YAML" in result.output
    assert "BROKEN lesson 2 (Missing subject): 'subject' is empty" in result.output
    assert "OK lesson 1: Where insecurity comes from" in result.output


def test_lessons_check_reports_a_template_error_with_its_file_and_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A practice's own template (COURSE_TEMPLATES_DIR) with a syntax error."""
    email = tmp_path / "branding" / "email"
    email.mkdir(parents=True)
    (email / "lesson.html").write_text(
        "{% extends 'email/base.html' %}\n{% block body %}\n{{ lesson.title }\n{% endblock %}\n"
    )
    app = create_app(make_config(tmp_path, sqlite_url, TEMPLATES_DIR=str(tmp_path / "branding")))
    try:
        result = CourseRunner(app).invoke(args=["lessons", "check"])
    finally:
        app.extensions["course"].engine.dispose()
    assert result.exit_code == 1
    assert f"BROKEN {email / 'lesson.html'}: line 3: unexpected '}}'" in result.output
    assert result.output.count(f"BROKEN {email / 'lesson.html'}") == 1  # not once per lesson
    assert "OK confirmation email" in result.output
    assert "OK lesson" not in result.output
