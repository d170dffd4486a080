"""Snooze ("pause until ..."), taking a course again, and the emails after the last lesson
(issue 14).

The reader acts from their own pages (the Flask test client, with the links from their
emails); the sending engine is the one of tests/test_live_edits.py (:class:`Harness`: a
sender on its own engine, ticked at a clock the test moves, recording every message). The
web pages read the real clock, so the harness's clock is brought up to the real time before
the reader acts (``Site.now``); a course that must be over by then starts weeks earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import frontmatter
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from course.app import create_app
from course.config import MIN_CALENDAR_GAP_HOURS
from course.content import AfterCourseFields
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Event,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.conftest import FakeClock, engine_settings, make_config
from tests.helpers import REPO, confirm_like_a_person, forms, link, local_path, parse
from tests.test_live_edits import COMPLETION, Harness, Sent, five_lessons, lesson, replay

GAP = timedelta(hours=MIN_CALENDAR_GAP_HOURS)
SEND_HOUR = 18  # the reader's own send hour in these tests
FOLLOWUP = AfterCourseFields(subject="How are you now?", body="A few days on.", days=3)
SNOOZE_LIMIT = "Please choose a day after today and at most 90 days ahead."


def zone_at_midday(now: datetime) -> str:
    """A time zone in which it is about midday at ``now``: "today" on the reader's page
    cannot turn into tomorrow while a test runs. (``Etc/GMT-5`` is UTC+05:00.)"""
    offset = 12 - now.hour
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@dataclass
class Site:
    """The web app and the sending engine on one database."""

    app: Flask
    client: FlaskClient
    h: Harness
    zone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def now(self) -> datetime:
        """Send whatever is due up to the real time, and stop the clock there."""
        self.h.run_until(utcnow())
        return self.h.clock.now

    def today(self) -> date:
        return utcnow().astimezone(self.tz).date()

    def at(self, day: date, hour: int = SEND_HOUR) -> datetime:
        """A wall time of the reader, as the UTC instant."""
        return datetime.combine(day, time(hour), tzinfo=self.tz).astimezone(UTC)

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz).replace(tzinfo=None)

    def enrol(self, email: str, course_id: int) -> str:
        return self.h.enrol(email, course_id, tz=self.zone, send_hour=SEND_HOUR)

    def progress_url(self, pid: str) -> str:
        """The "My progress" link of the reader's latest lesson email."""
        latest = [s for s in self.h.sent(pid) if s.kind == DeliveryKind.LESSON][-1]
        return local_path(link(latest.raw, "me"))

    def page(self, pid: str) -> str:
        response = self.client.get(self.progress_url(pid))
        assert response.status_code == 200
        return response.get_data(as_text=True)

    def press(self, pid: str, action: str, extra: dict[str, str] | None = None) -> TestResponse:
        """Send the progress page's form that posts to ``.../<action>``, as a browser does
        (``extra``: the button pressed, a typed value)."""
        found = [f for f in forms(self.page(pid)) if f.action.endswith(f"/{action}")]
        assert found, f"no {action} form on the progress page"
        response = self.client.post(found[0].action, data={**found[0].fields, **(extra or {})})
        self.h.observe()
        return response

    def snooze(self, pid: str, **form: str) -> TestResponse:
        response = self.client.post(self.progress_url(pid) + "/snooze", data=form)
        self.h.observe()
        return response

    def tick_every(self, step: timedelta, until: datetime) -> None:
        """Tick the sender every ``step`` up to ``until`` (as ``course scheduler`` does,
        whether or not anything is due)."""
        while self.h.clock.now + step <= until:
            self.h.clock.now += step
            self.h.sender.tick()
            self.h.observe()


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    app = create_app(make_config(tmp_path, db_url))
    state = app.extensions["course"]
    now = utcnow().replace(microsecond=0)
    yield Site(app, app.test_client(), Harness(state.settings, FakeClock(now)), zone_at_midday(now))
    state.engine.dispose()


def steps_course(site: Site, slug: str = "steps", **settings: object) -> int:
    """Five lessons (the first at once, then one a day), a completion email a day after
    the last lesson, and a follow-up three days after that."""
    return site.h.new_course(
        slug, five_lessons(), completion=COMPLETION, followup=FOLLOWUP, **settings
    )


def times(site: Site, sent: list[Sent]) -> list[tuple[int, datetime]]:
    return [(s.key, site.local(s.at)) for s in sent]


def daily_from(site: Site, first: date, keys: list[int]) -> list[tuple[int, datetime]]:
    """``keys`` one a day from ``first``, at the reader's send hour."""
    return [
        (k, datetime.combine(first + timedelta(days=n), time(SEND_HOUR)))
        for n, k in enumerate(keys)
    ]


def snooze_events(site: Site, pid: str) -> list[str | None]:
    with site.h.sessions() as s:
        return list(
            s.scalars(
                select(Event.value)
                .join(Subscriber, Subscriber.id == Event.subscriber_id)
                .where(Subscriber.public_id == pid, Event.kind == EventKind.SNOOZE)
            )
        )


# -- snooze ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("press", "days"),
    [({"until": "3"}, 3), ({"until": "7"}, 7), ({"until_date": "+12"}, 12)],
    ids=["a-few-days", "a-week", "a-date"],
)
def test_a_snooze_holds_the_course_and_it_goes_on_by_itself_with_one_lesson(
    site: Site, press: dict[str, str], days: int
) -> None:
    """From the progress page: 3 days, a week, or a chosen day. Nothing arrives before that
    day, however often the sender runs; on that day the next lesson comes at the reader's
    send hour, then one a day as before."""
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    today = site.today()
    assert [s.key for s in h.lessons(pid)] == [1]
    assert h.queued_lesson(pid) == (2, site.at(today + timedelta(days=1)))
    if "until_date" in press:
        press = {"until_date": (today + timedelta(days=days)).isoformat()}
    response = site.press(pid, "snooze", press)
    assert response.status_code == 303 and response.headers["Location"].endswith("#status")
    back_on = today + timedelta(days=days)
    # The break ends at the start of that day in the reader's zone; the lesson waits for
    # the send hour of that day.
    assert site.h.subscriber(pid).snoozed_until == site.at(back_on, 0)
    assert h.queued_lesson(pid) == (2, site.at(back_on))
    assert snooze_events(site, pid) == [back_on.isoformat()]
    page = site.page(pid)
    assert "You're taking a break. Lessons start again on" in page
    assert f"{back_on:%A} {back_on.day} {back_on:%B}, {SEND_HOUR}:00" in page
    before = len(h.log)
    site.tick_every(timedelta(hours=2), site.at(back_on) - timedelta(seconds=1))
    assert h.log[before:] == []  # not a message, not a change of status
    h.run_for(days=10)
    assert times(site, h.lessons(pid)[1:]) == daily_from(site, back_on, [2, 3, 4, 5])
    assert replay(h, pid) == []


def test_continue_now_ends_a_snooze_and_the_lesson_comes_when_it_was_due(site: Site) -> None:
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    tomorrow = site.today() + timedelta(days=1)
    site.press(pid, "snooze", {"until": "7"})
    assert h.queued_lesson(pid) == (2, site.at(site.today() + timedelta(days=7)))
    # The page now offers "Continue now" (a form of its own, with until=now).
    continue_now = [f for f in forms(site.page(pid)) if f.fields.get("until") == "now"]
    assert len(continue_now) == 1
    assert site.client.post(continue_now[0].action, data=continue_now[0].fields).status_code == 303
    assert h.subscriber(pid).snoozed_until is None
    assert h.queued_lesson(pid) == (2, site.at(tomorrow))
    assert "taking a break" not in site.page(pid)
    h.run_until(site.at(tomorrow + timedelta(days=1), 23))
    assert times(site, h.lessons(pid)[1:]) == daily_from(site, tomorrow, [2, 3])


def test_after_the_longest_snooze_one_lesson_then_one_a_day(site: Site) -> None:
    """Ninety days away, and the scheduler was down on the day the break ended: one lesson
    when it is back, the next one a day later, never a pile of them."""
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    back_on = site.today() + timedelta(days=90)
    assert site.snooze(pid, until_date=back_on.isoformat()).status_code == 303
    before = len(h.log)
    site.tick_every(timedelta(hours=12), site.at(back_on) - timedelta(seconds=1))
    assert h.log[before:] == []
    # Down from the day before the break ends until three days after.
    h.clock.now = site.at(back_on + timedelta(days=3), 10)
    h.run_for(days=10)
    got = h.lessons(pid)[1:]
    assert [s.key for s in got] == [2, 3, 4, 5]
    assert site.local(got[0].at) == datetime.combine(back_on + timedelta(days=3), time(10))
    assert times(site, got[1:]) == daily_from(site, back_on + timedelta(days=4), [3, 4, 5])
    assert all(b.at - a.at >= GAP for a, b in zip(got, got[1:], strict=False))
    assert replay(h, pid) == []


def bad_days(today: date) -> dict[str, dict[str, str]]:
    return {
        "today": {"until_date": today.isoformat()},
        "yesterday": {"until_date": (today - timedelta(days=1)).isoformat()},
        "long-ago": {"until_date": "2001-01-01"},
        "91-days": {"until_date": (today + timedelta(days=91)).isoformat()},
        "year-9999": {"until_date": "9999-12-31"},
        "no-such-day": {"until_date": f"{today.year + 1}-02-30"},
        "not-a-date": {"until_date": "tomorrow"},
        "other-format": {"until_date": (today + timedelta(days=5)).strftime("%d/%m/%Y")},
        "short": {"until_date": f"{today.year + 1}-1-1"},
        "wide-digits": {"until_date": "２０２７-０１-０１"},
        "nul": {"until_date": "\x00" * 10},
        "other-button": {"until": "30"},
        "negative": {"until": "-3"},
        "fraction": {"until": "3.5"},
        "words": {"until": "a while"},
        "empty": {"until": ""},
        "nothing": {},
    }


@pytest.mark.parametrize("name", list(bad_days(date(2026, 1, 1))))
def test_a_snooze_day_that_cannot_be_taken_is_refused_with_a_message(site: Site, name: str) -> None:
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    queued = h.queued_lesson(pid)
    response = site.snooze(pid, **bad_days(site.today())[name])
    assert response.status_code == 400
    # A NUL byte is refused before the page reads the form, with its own words.
    message = "characters that cannot be used" if name == "nul" else SNOOZE_LIMIT
    assert message in response.get_data(as_text=True)
    assert h.subscriber(pid).snoozed_until is None
    assert h.queued_lesson(pid) == queued
    assert snooze_events(site, pid) == []


def test_the_first_and_the_last_day_that_can_be_chosen(site: Site) -> None:
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    today = site.today()
    for days in (90, 1):
        day = today + timedelta(days=days)
        assert site.snooze(pid, until_date=day.isoformat()).status_code == 303
        assert h.queued_lesson(pid) == (2, site.at(day))  # the later choice replaces it


def test_only_a_running_course_can_take_a_break(site: Site) -> None:
    h = site.h
    course_id = steps_course(site)
    pid = site.enrol("ana@example.com", course_id)
    site.now()
    url = site.progress_url(pid)
    # Not a progress link, or another kind of link: refused, never a server error.
    assert site.client.post(url[:-3] + "xyz/snooze", data={"until": "3"}).status_code == 400
    unsubscribe = str(parse(h.lessons(pid)[0].raw)["List-Unsubscribe"]).strip("<>")
    token = local_path(unsubscribe).rsplit("/", 1)[1]
    assert site.client.post(f"/me/{token}/snooze", data={"until": "3"}).status_code == 400
    # JSON instead of a form: a 400 with the message.
    response = site.client.post(url + "/snooze", json={"until": "3"})
    assert response.status_code == 400 and SNOOZE_LIMIT in response.get_data(as_text=True)
    assert site.client.get(url + "/snooze").status_code == 405
    # A paused course: resume it instead.
    assert h.pause(pid)
    response = site.snooze(pid, until="3")
    assert response.status_code == 400
    assert "Only a running course can take a break." in response.get_data(as_text=True)
    assert h.subscriber(pid).snoozed_until is None


def test_a_snooze_of_one_course_leaves_the_other_course_alone(site: Site) -> None:
    h = site.h
    steps = steps_course(site)
    other = h.new_course("other", [lesson(1, delay=0), lesson(2), lesson(3)])
    pid = site.enrol("ana@example.com", steps)
    other_pid = site.enrol("ana@example.com", other)
    site.now()
    today = site.today()
    other_queued = h.queued_lesson(other_pid)
    assert other_queued == (2, site.at(today + timedelta(days=1)))
    site.press(pid, "snooze", {"until": "7"})
    assert h.queued_lesson(other_pid) == other_queued
    assert h.subscriber(other_pid).snoozed_until is None
    assert "taking a break" not in site.page(other_pid)
    h.run_for(days=6, hours=23)
    assert [s.key for s in h.lessons(pid)] == [1]  # the snoozed course: nothing
    assert times(site, h.lessons(other_pid)[1:]) == daily_from(
        site, today + timedelta(days=1), [2, 3]
    )
    h.run_for(days=10)
    assert times(site, h.lessons(pid)[1:]) == daily_from(
        site, today + timedelta(days=7), [2, 3, 4, 5]
    )
    assert replay(h, pid) == [] and replay(h, other_pid) == []


def test_a_snooze_that_ends_at_the_weekend_goes_on_on_monday_on_a_weekday_course(
    site: Site,
) -> None:
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site, weekdays_only=True))
    site.now()
    today = site.today()
    saturday = today + timedelta(days=2)
    while saturday.weekday() != 5:
        saturday += timedelta(days=1)
    assert site.snooze(pid, until_date=saturday.isoformat()).status_code == 303
    monday = saturday + timedelta(days=2)
    assert h.queued_lesson(pid) == (2, site.at(monday))
    h.run_for(days=20)
    assert [s.key for s in h.lessons(pid)] == [1, 2, 3, 4, 5]
    assert site.local(h.lessons(pid)[1].at) == datetime.combine(monday, time(SEND_HOUR))
    assert all(site.local(s.at).weekday() < 5 for s in h.lessons(pid)[1:])


# -- taking a course again ------------------------------------------------------------------------


def days_ago(days: float) -> datetime:
    return utcnow().replace(microsecond=0) - timedelta(days=days)


def finish_in_the_past(site: Site) -> str:
    """A reader who took the whole "steps" course (with its completion and follow-up
    emails) three weeks ago; the clock is now the real time."""
    h = site.h
    h.clock.now = days_ago(21)
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    assert h.subscriber(pid).status == SubscriberStatus.COMPLETED
    assert [s.kind for s in h.sent(pid)] == ["lesson"] * 5 + ["completion", "followup"]
    return pid


def history(site: Site, pid: str) -> dict[str, Any]:
    """Everything stored about the reader's runs: deliveries, answers and notes, events."""
    with site.h.sessions() as s:
        sub = s.scalars(select(Subscriber).where(Subscriber.public_id == pid)).one()
        return {
            "deliveries": sorted(
                (d.run, d.kind, d.number, d.status, d.sent_at)
                for d in s.scalars(select(Delivery).where(Delivery.subscriber_id == sub.id))
            ),
            "progress": sorted(
                (p.run, p.lesson, p.checkin, p.note)
                for p in s.scalars(
                    select(LessonProgress).where(LessonProgress.subscriber_id == sub.id)
                )
            ),
            "events": sorted(
                (e.id, e.kind, e.lesson, e.value)
                for e in s.scalars(select(Event).where(Event.subscriber_id == sub.id))
            ),
        }


def kept(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """What ``before`` held that ``after`` no longer does (changed or gone)."""
    return {key: [row for row in before[key] if row not in after[key]] for key in before}


def message_ids(sent: list[Sent]) -> set[str]:
    return {str(parse(s.raw)["Message-ID"]) for s in sent}


def test_taking_a_course_again_starts_a_new_run_and_keeps_the_first(site: Site) -> None:
    """From the progress page of a completed course: run 2 starts with lesson 1 at once,
    then one a day in order, each once, with its own completion and follow-up; every
    message of run 2 has a Message-ID of its own; what the reader did in run 1 stays."""
    h = site.h
    pid = finish_in_the_past(site)
    run_1 = h.sent(pid)
    # What the reader did in run 1: an answer and a note from a lesson's check-in link, a
    # note from the progress page.
    checkin = local_path(link(h.lessons(pid)[1].raw, "checkin"))
    answer = site.client.post(checkin, data={"answer": "lighter", "note": "Calmer today."})
    assert answer.status_code == 200
    assert site.press(pid, "note", {"lesson": "3", "note": "Talked to Sam."}).status_code == 303
    before = history(site, pid)
    assert (1, 2, "lighter", "Calmer today.") in before["progress"]
    assert (1, 3, None, "Talked to Sam.") in before["progress"]
    assert "Take this course again" in site.page(pid)
    clicked = utcnow()
    assert site.press(pid, "again").status_code == 303
    sub = h.subscriber(pid)
    assert (sub.run, sub.status, sub.completed_at) == (2, SubscriberStatus.ACTIVE, None)
    start = site.now()
    h.run_for(days=14)
    run_2 = [s for s in h.sent(pid) if s.run == 2]
    assert [(s.kind, s.key) for s in run_2] == [
        *(("lesson", k) for k in (1, 2, 3, 4, 5)),
        ("completion", 0),
        ("followup", 0),
    ]
    assert clicked <= run_2[0].at <= start  # lesson 1 at once, as after confirming
    today = site.local(start).date()
    assert times(site, run_2[1:5]) == daily_from(site, today + timedelta(days=1), [2, 3, 4, 5])
    assert [s.day_of for s in h.lessons(pid, run=2)] == [(k, 5) for k in range(1, 6)]
    # Nothing of run 1 again, and no message of run 2 shares a Message-ID with run 1.
    assert [s for s in h.sent(pid) if s.run == 1] == run_1
    assert message_ids(run_1).isdisjoint(message_ids(run_2))
    assert len(message_ids(run_2)) == len(run_2)
    assert all("-run2" in mid for mid in message_ids(run_2))
    # Run 1's deliveries, answers, notes and events are all still there.
    after = history(site, pid)
    assert kept(before, after) == {"deliveries": [], "progress": [], "events": []}
    run_2_rows = [
        (kind, key, status) for run, kind, key, status, _ in after["deliveries"] if run == 2
    ]
    assert sorted(run_2_rows) == sorted((s.kind, s.key, DeliveryStatus.SENT) for s in run_2)
    # Completed again; the export still holds what the reader wrote in run 1.
    page = site.page(pid)
    assert "You've completed the course" in page
    data = site.client.get(site.progress_url(pid) + "/data.json").get_json()
    assert "Calmer today." in str(data) and "Talked to Sam." in str(data)
    assert replay(h, pid) == []


def test_a_course_can_be_taken_again_only_when_completed(site: Site) -> None:
    h = site.h
    pid = site.enrol("ana@example.com", steps_course(site))
    site.now()
    url = site.progress_url(pid) + "/again"
    assert "Take this course again" not in site.page(pid)
    for status in ("active", "paused"):
        if status == "paused":
            assert h.pause(pid)
        response = site.client.post(url)
        assert response.status_code == 400, status
        assert "Only a completed course can be taken again." in response.get_data(as_text=True)
        assert h.subscriber(pid).run == 1
    assert site.client.get(url).status_code == 405


def test_signing_up_again_after_completing_starts_a_new_run_after_the_click(site: Site) -> None:
    """Re-confirming: the signup form sends a confirmation; nothing changes until the
    reader's own click on it, which starts run 2 from lesson 1."""
    h = site.h
    pid = finish_in_the_past(site)
    response = site.client.post("/subscribe", json={"email": "ana@example.com", "course": "steps"})
    assert response.status_code == 202
    site.now()
    [confirmation] = h.sent(pid, "confirm")
    sub = h.subscriber(pid)
    assert (sub.run, sub.status) == (1, SubscriberStatus.COMPLETED)
    assert confirm_like_a_person(site.client, link(confirmation.raw, "confirm")).status_code == 200
    h.observe()
    assert h.subscriber(pid).run == 2
    h.run_for(days=10)
    assert [s.key for s in h.lessons(pid, run=2)] == [1, 2, 3, 4, 5]
    assert message_ids(h.lessons(pid, run=1)).isdisjoint(message_ids(h.lessons(pid, run=2)))
    # A second click on the same confirmation starts nothing more.
    assert confirm_like_a_person(site.client, link(confirmation.raw, "confirm")).status_code == 200
    h.observe()
    assert h.subscriber(pid).run == 2
    assert [s.key for s in h.lessons(pid, run=2)] == [1, 2, 3, 4, 5]
    assert replay(h, pid) == []


def test_a_new_run_drops_what_was_still_to_come_after_the_earlier_run(site: Site) -> None:
    """Taken again the day the completion email came, before the follow-up of run 1: that
    follow-up ("how are you, a few days on?") never arrives in the middle of run 2 or
    after it; the reader gets run 2's own completion and follow-up, once each."""
    h = site.h
    h.clock.now = days_ago(6.05)
    course_id = h.new_course(
        "steps",
        five_lessons(),
        completion=COMPLETION,
        followup=AfterCourseFields(subject="How are you now?", body="Two weeks on.", days=14),
    )
    pid = site.enrol("ana@example.com", course_id)
    site.now()
    assert [s.kind for s in h.sent(pid)] == ["lesson"] * 5 + ["completion"]
    assert site.press(pid, "again").status_code == 303
    h.run_for(days=40)
    kinds = [(s.run, s.kind) for s in h.sent(pid) if s.kind != "lesson"]
    assert kinds == [(1, "completion"), (2, "completion"), (2, "followup")]
    with h.sessions() as s:
        left = s.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.QUEUED)).all()
    assert left == []


# -- after the last lesson ----------------------------------------------------------------------


def shipped(name: str) -> dict[str, object]:
    """The front matter of a shipped after-course email (lessons/<name>.md)."""
    return dict(frontmatter.load(REPO / "lessons" / f"{name}.md").metadata)


def after_course_days() -> tuple[int, int]:
    """The ``days`` of the shipped completion and follow-up emails."""
    days = shipped("completion")["days"], shipped("followup")["days"]
    assert isinstance(days[0], int) and isinstance(days[1], int)
    return days[0], days[1]


BERLIN = ZoneInfo("Europe/Berlin")


def local_day(instant: datetime) -> date:
    return instant.astimezone(BERLIN).date()


def test_the_shipped_course_sends_its_completion_and_follow_up_on_their_days(
    tmp_path: Path, db_url: str
) -> None:
    """The first course, as shipped: the completion email ``days`` (lessons/completion.md)
    after the last lesson, the follow-up ``days`` (lessons/followup.md) after the
    completion, at the reader's send hour, once each, and nothing after them."""
    completion_days, followup_days = after_course_days()
    h = Harness(engine_settings(tmp_path, db_url), FakeClock())  # Monday 08:00 in Berlin
    pid = h.enrol("ana@example.com", 1, tz="Europe/Berlin")
    h.run_for(days=completion_days + followup_days + 30)
    lessons = h.lessons(pid)
    assert [s.key for s in lessons] == [1, 2, 3, 4, 5]
    [completion] = h.sent(pid, DeliveryKind.COMPLETION)
    [followup] = h.sent(pid, DeliveryKind.FOLLOWUP)
    assert completion.subject == shipped("completion")["subject"]
    assert followup.subject == shipped("followup")["subject"]
    last = lessons[-1].at
    assert (local_day(completion.at) - local_day(last)).days == max(completion_days, 1)
    assert (local_day(followup.at) - local_day(completion.at)).days == max(followup_days, 1)
    for sent in (completion, followup):
        assert (sent.at.astimezone(BERLIN).hour, sent.at.astimezone(BERLIN).minute) == (8, 0)
    assert h.sent(pid)[-1] == followup
    assert h.subscriber(pid).status == SubscriberStatus.COMPLETED
    # The follow-up carries its own one-click answers and the booking link.
    text = followup.text
    assert "/checkin/" in text and "/book/" in text


AFTER_COURSE: dict[
    str, tuple[dict[str, Any], Callable[[date], tuple[date | None, date | None]]]
] = {
    # completion 3 days after the last lesson (Friday -> Monday), follow-up 10 after that
    "3-and-10": (
        {
            "completion": COMPLETION.model_copy(update={"days": 3}),
            "followup": FOLLOWUP.model_copy(update={"days": 10}),
        },
        lambda last: (last + timedelta(days=3), last + timedelta(days=13)),
    ),
    # no completion email: the follow-up counts from the last lesson
    "follow-up-only": (
        {"followup": FOLLOWUP.model_copy(update={"days": 5})},
        lambda last: (None, last + timedelta(days=5)),
    ),
    # "0 days": never on the day of the last lesson, never two emails at once
    "0-and-0": (
        {
            "completion": COMPLETION.model_copy(update={"days": 0}),
            "followup": FOLLOWUP.model_copy(update={"days": 0}),
        },
        lambda last: (last + timedelta(days=1), last + timedelta(days=2)),
    ),
    # a weekday-only course: a completion due on Saturday comes on Monday, and the
    # follow-up counts from when the completion really came
    "weekdays": (
        {
            "completion": COMPLETION,
            "followup": FOLLOWUP.model_copy(update={"days": 4}),
            "weekdays_only": True,
        },
        lambda last: (last + timedelta(days=3), last + timedelta(days=7)),
    ),
}


@pytest.mark.parametrize("name", list(AFTER_COURSE))
def test_completion_and_follow_up_arrive_on_their_days_once_each(
    tmp_path: Path, db_url: str, name: str
) -> None:
    options, expected = AFTER_COURSE[name]
    h = Harness(engine_settings(tmp_path, db_url), FakeClock())  # Monday 2026-03-02
    course_id = h.new_course("after", five_lessons(), **options)
    pid = h.enrol("ana@example.com", course_id, tz="Europe/Berlin")
    h.run_for(days=40)
    lessons = h.lessons(pid)
    assert [s.key for s in lessons] == [1, 2, 3, 4, 5]
    last = local_day(lessons[-1].at)
    assert last == date(2026, 3, 6)  # a Friday
    want_completion, want_followup = expected(last)
    completions = [local_day(s.at) for s in h.sent(pid, DeliveryKind.COMPLETION)]
    followups = [local_day(s.at) for s in h.sent(pid, DeliveryKind.FOLLOWUP)]
    assert completions == ([want_completion] if want_completion else [])
    assert followups == [want_followup]
    for sent in h.sent(pid):
        assert (sent.at.astimezone(BERLIN).hour, sent.at.astimezone(BERLIN).minute) == (8, 0)
    assert replay(h, pid) == []
