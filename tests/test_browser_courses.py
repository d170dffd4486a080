"""End to end in headless Chromium: the practice writes and publishes a second course in the
course editor, and a reader takes it next to the first one (issue 14).

The app runs as ``course run --no-scheduler`` in a subprocess (as in tests/test_browser.py),
and this test process is the sender: a ``Sender`` on the same SQLite file and outbox folder,
with a clock the test moves. So "days" pass in a moment, and every email's Date header says
when it went out; the checks compare those with the days and hours the course promises
(lesson delays, the reader's send hour, a break until a chosen day, the completion and
follow-up days). The reader's page views and clicks happen at the real time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from course.config import Settings, load_settings
from course.mail.outbox import OutboxTransport
from course.models import Delivery, DeliveryStatus
from course.signups import decide_signups
from tests import test_browser
from tests.conftest import FakeClock, make_sender, sessions_for
from tests.helpers import parse, text_part
from tests.test_browser import ARTIFACTS, _create_operator, course_run, shot

#: Debian's Chromium through Playwright, skipped (or failed, in CI) without it.
browser_page = test_browser.browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TZ = ZoneInfo("Europe/Berlin")
READER = "robin@example.com"
STAFF = "owner@harbor.example.org"
STAFF_PASSWORD = "a long operator password"
SEND_HOUR = 8  # the practice's default (COURSE_SEND_HOUR)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``course run --no-scheduler`` on a fresh database, in calendar mode."""
    with course_run(
        tmp_path,
        "--no-scheduler",
        COURSE_PRACTICE_NAME="Harbor Therapy",
        COURSE_SEND_HOUR=str(SEND_HOUR),
    ) as running:
        yield running


class Days:
    """The sender of this test: ticks at every moment something is due, up to a time."""

    def __init__(self, env: dict[str, str], start: datetime) -> None:
        overrides = {k.removeprefix("COURSE_"): v for k, v in env.items() if k[:7] == "COURSE_"}
        self.settings: Settings = load_settings(overrides)
        self.clock = FakeClock(start)
        self.outbox = OutboxTransport(self.settings.mail_url.removeprefix("outbox:"))
        self.sessions = sessions_for(self.settings.database_url)
        self.sender = make_sender(self.settings, self.outbox, self.clock, worker="days")

    def run_until(self, end: datetime) -> None:
        for _ in range(500):
            decide_signups(self.sessions, self.settings, clock=self.clock)
            with self.sessions() as s:
                due = s.scalar(
                    select(func.min(Delivery.due_at)).where(
                        Delivery.status == DeliveryStatus.QUEUED
                    )
                )
            if due is None or due > end:
                break
            self.clock.now = max(self.clock.now, due)
            self.sender.tick()
        self.clock.now = max(self.clock.now, end)

    def mails(self, to: str = READER) -> list[Mail]:
        """Every message to ``to``, oldest first."""
        found = []
        for path in reversed(self.outbox.messages()):
            raw = path.read_bytes()
            msg = parse(raw)
            if msg["To"].addresses[0].addr_spec == to:
                found.append(
                    Mail(str(msg["Subject"]), parsedate_to_datetime(msg["Date"]), text_part(raw))
                )
        return found


@dataclass(frozen=True)
class Mail:
    subject: str
    sent: datetime
    text: str

    @property
    def local(self) -> datetime:
        return self.sent.astimezone(TZ)


def at(day: date, hour: int = SEND_HOUR) -> datetime:
    """``hour``:00 on ``day`` in the reader's time zone."""
    return datetime.combine(day, time(hour), tzinfo=TZ)


def link(text: str, path: str) -> str:
    match = re.search(rf"http://127\.0\.0\.1:\d+/{path}/\S+", text)
    assert match, f"no /{path}/ link"
    return match.group(0)


def test_a_second_course_written_in_the_editor_and_a_reader_on_both(
    live: tuple[str, dict[str, str]], browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    base, env = live
    page: Page = browser_page.context.browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 390, "height": 844}, timezone_id="Europe/Berlin"
    ).new_page()
    page.set_default_timeout(15000)
    # The sender's first tick: 03:00 in the reader's time zone, after this test's clicks.
    now = datetime.now(UTC)
    start = at((now + timedelta(hours=1)).astimezone(TZ).date(), 3)
    if start < now + timedelta(hours=1):
        start = at(start.date() + timedelta(days=1), 3)
    days = Days(env, start)
    day0 = start.date()

    # -- the practice writes a course ---------------------------------------------------------
    _create_operator(env, STAFF, STAFF_PASSWORD)
    page.goto(base + "/admin/")
    page.get_by_label("Email").fill(STAFF)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Courses", exact=True).click()
    expect(page.get_by_role("heading", name="Courses", exact=True)).to_be_visible()
    page.get_by_label("Title").fill("Calm at work")
    page.get_by_label(re.compile("Address name")).fill("calm-at-work")
    page.get_by_role("button", name="Create the course").click()
    expect(page.get_by_role("heading", name="Calm at work")).to_be_visible()
    shot(page, "30-editor-new-course")

    lessons = [
        ("Breathing space", 0, "Three slow breaths before you open your inbox."),
        ("Noticing the body", 2, "Where does worry sit in your body at work?"),
        ("A kinder evening", 2, "Close the day with one kind sentence to yourself."),
    ]
    for title, delay, text in lessons:
        page.get_by_label("Title of a new lesson").fill(title)
        page.get_by_role("button", name="Add a lesson").click()
        expect(page.get_by_role("heading", name=re.compile(title))).to_be_visible()
        page.get_by_label(re.compile("^Days after the previous lesson")).fill(str(delay))
        page.get_by_label("Preview line", exact=False).fill(f"{title}, in ten minutes.")
        page.get_by_label("The lesson, in Markdown").fill(
            f"{text}\n\n## Today's reflection\n\nWrite down what you noticed."
        )
        page.get_by_role("button", name="Save to the draft").click()
        expect(page.get_by_text("Saved to the draft. Readers get it")).to_be_visible()
        # The preview: the email at phone and desktop width, and its text part.
        for frame in ("The email on a phone", "The email on a desktop"):
            email = page.frame_locator(f'iframe[title="{frame}"]')
            expect(email.get_by_role("heading", name=title)).to_be_visible()
            expect(email.get_by_text(text)).to_be_visible()
        expect(page.locator("pre.text-part")).to_contain_text(text)
        # A viewport shot: Chromium leaves sandboxed frames out of full-page screenshots.
        page.get_by_role("heading", name="Preview").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"31-editor-lesson-{title.split()[0].lower()}.png"))
        page.get_by_role("link", name=re.compile("Calm at work")).first.click()

    # A test of lesson 2 arrives in the practice's own inbox.
    page.get_by_role("link", name=re.compile("Noticing the body")).click()
    page.get_by_role("button", name="Send me a test").click()
    expect(page.get_by_text(f"A test was sent to {STAFF}")).to_be_visible()
    [test_mail] = days.mails(STAFF)
    assert test_mail.subject == "[Test] Day 2 of 3: Noticing the body"
    page.get_by_role("link", name=re.compile("Calm at work")).first.click()

    # The completion email (a day after the last lesson) and the follow-up (three days on).
    for which, subject, when, words in (
        ("Completion email", "You finished Calm at work", "1", "Well done for these evenings."),
        ("Follow-up email", "How are you, a few days on?", "3", "How is work feeling now?"),
    ):
        page.get_by_role("link", name=which).click()
        page.get_by_label("Subject line").fill(subject)
        page.get_by_label(re.compile("^Days after")).fill(when)
        page.get_by_label("The email, in Markdown").fill(words)
        page.get_by_role("button", name="Save to the draft").click()
        expect(page.frame_locator("iframe.phone").get_by_text(words)).to_be_visible()
        page.get_by_role("link", name=re.compile("Calm at work")).first.click()

    # Publish: the review says who is affected (nobody yet) and shows the changes.
    page.get_by_role("link", name="Review and publish…").click()
    expect(page.get_by_text("Nobody is on this course now")).to_be_visible()
    expect(page.locator("pre.diff").first).to_be_visible()
    shot(page, "32-editor-publish-review")
    page.get_by_label("A note for the list of versions").fill("The first three lessons")
    page.get_by_role("button", name="Publish now").click()
    expect(page.get_by_text("Version 1 is published")).to_be_visible()
    shot(page, "33-editor-published")
    page.get_by_role("link", name="Signup page").click()
    expect(page.get_by_role("heading", name=re.compile("Calm at work"))).to_be_visible()
    shot(page, "34-signup-calm-at-work")

    # -- a reader joins both courses ----------------------------------------------------------
    for slug in ("feeling-secure", "calm-at-work"):
        page.goto(f"{base}/c/{slug}")
        page.get_by_label("Your email address").fill(READER)
        page.get_by_label(re.compile("Your first name")).fill("Robin")
        page.get_by_role("button", name="Start the free course").click()
        expect(page.get_by_role("heading", name="Almost there")).to_be_visible()
        days.run_until(start)  # the confirmation goes out
        confirmation = days.mails()[-1]
        assert "confirm" in confirmation.subject.lower()
        page.goto(link(confirmation.text, "confirm"))
        page.get_by_role("button", name=re.compile("Yes, start")).click()
        expect(page.get_by_role("heading", name=re.compile("You're in"))).to_be_visible()
    shot(page, "35-reader-confirmed-both")

    after = ("You finished Calm at work", "How are you, a few days on?")

    # Day 0 and day 1: the first lesson of each at once, then lesson 2 of the five-day course.
    days.run_until(at(day0 + timedelta(days=1), 9))
    secure = [m for m in days.mails() if " of 5:" in m.subject]
    calm = [m for m in days.mails() if " of 3:" in m.subject]
    assert [(m.subject[:11], m.sent) for m in secure] == [
        ("Day 1 of 5:", start),
        ("Day 2 of 5:", at(day0 + timedelta(days=1))),
    ]
    assert [(m.subject, m.sent) for m in calm] == [("Day 1 of 3: Breathing space", start)]

    # A break from the five-day course, from its progress page, until a chosen day.
    page.goto(link(secure[-1].text, "me"))
    expect(page.get_by_text("Feeling secure in your relationship")).to_be_visible()
    back_on = datetime.now(TZ).date() + timedelta(days=12)
    page.get_by_label("Or choose a day").fill(back_on.isoformat())
    page.get_by_role("button", name="Pause until that day").click()
    expect(page.get_by_text("You're taking a break.")).to_be_visible()
    shot(page, "36-reader-snoozed")

    # The work course goes on: lessons 2 and 3 two days apart, the completion a day after,
    # the follow-up three days after that. Nothing from the five-day course meanwhile.
    days.run_until(at(back_on - timedelta(days=1), 23))
    calm = [m for m in days.mails() if " of 3:" in m.subject or m.subject in after]
    assert [(m.subject, m.sent) for m in calm] == [
        ("Day 1 of 3: Breathing space", start),
        ("Day 2 of 3: Noticing the body", at(day0 + timedelta(days=2))),
        ("Day 3 of 3: A kinder evening", at(day0 + timedelta(days=4))),
        ("You finished Calm at work", at(day0 + timedelta(days=5))),
        ("How are you, a few days on?", at(day0 + timedelta(days=8))),
    ]
    assert len([m for m in days.mails() if " of 5:" in m.subject]) == 2  # on a break
    # The completion offers the practice's other course; the follow-up asks, one click each.
    assert "Feeling secure in your relationship" in calm[3].text
    assert "/checkin/" in calm[4].text and "/book/" in calm[4].text
    page.goto(link(calm[2].text, "me"))
    expect(page.get_by_text("You've completed the course.")).to_be_visible()
    shot(page, "37-reader-completed")

    # The break ends on its own: lesson 3 of the five-day course on the chosen day, at the
    # reader's hour, one lesson.
    days.run_until(at(back_on, 23))
    secure = [m for m in days.mails() if " of 5:" in m.subject]
    assert [(m.subject[:11], m.sent) for m in secure][2:] == [("Day 3 of 5:", at(back_on))]

    # The practice sees the published version with its author.
    page.goto(base + "/admin/courses/calm-at-work/versions")
    row = page.get_by_role("row", name=re.compile("The first three lessons"))
    expect(row).to_contain_text(STAFF)
    shot(page, "38-editor-versions")
    page.context.close()
