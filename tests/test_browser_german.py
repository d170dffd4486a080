"""A German reader's whole journey in headless Chromium, against a real `course run` whose
first course is the German one (lessons/de): every page and every email is German, with
``lang="de"``, and dates read the German way in Berlin time.

Like tests/test_browser.py: Debian's Chromium through Playwright, skipped without it
(unless COURSE_TEST_REQUIRE_BROWSER is set, as in CI).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from course.mail.outbox import OutboxTransport
from tests.helpers import REPO, html_part, parse, text_part
from tests.test_browser import (  # noqa: F401 - fixtures
    booking_site,
    browser_page,
    course_run,
    find,
    shot,
)
from tests.test_i18n import assert_german, assert_page, visible

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRACTICE = "Praxis am Hafen"


@pytest.fixture
def german_app(tmp_path: Path, booking_site: str) -> Iterator[tuple[str, Path]]:  # noqa: F811
    """`course run` whose first course is lessons/de (COURSE_LESSONS_DIR), as a German
    practice would install it."""
    with course_run(
        tmp_path,
        COURSE_BOOKING_URL=booking_site,
        COURSE_PRACTICE_NAME=PRACTICE,
        COURSE_MAIL_FROM=f"{PRACTICE} <kurs@hafen.example.de>",
        COURSE_LESSONS_DIR=str(REPO / "lessons" / "de"),
        COURSE_TICK_SECONDS="0.5",
        COURSE_LESSON_INTERVAL="3600",
    ) as (base, _env):
        yield base, tmp_path / "outbox"


def newest_mail(outbox: Path, subject: str, timeout: float = 20) -> bytes:
    """The newest message in the outbox whose subject contains ``subject``."""
    deadline = time.monotonic() + timeout
    while True:
        for path in OutboxTransport(outbox).messages():
            data = path.read_bytes()
            if subject in str(parse(data)["Subject"]):
                return data
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail with {subject!r} in the outbox")
        time.sleep(0.3)


def check_mail(data: bytes, where: str) -> str:
    """A German email: subject, text part and HTML part (with lang="de"); its text."""
    assert_german(str(parse(data)["Subject"]), f"{where} subject")
    text = text_part(data)
    assert_german(text, f"{where} text part")
    assert_page(html_part(data), "de", f"{where} HTML part")
    return text


def check_page(page: object, where: str) -> None:
    """The page in the browser is German, and says so (lang="de", dir="ltr")."""
    html = page.content()  # type: ignore[attr-defined]
    assert page.locator("html").get_attribute("lang") == "de", where  # type: ignore[attr-defined]
    assert visible(html).dir == "ltr"
    assert_page(html, "de", where)


def test_a_german_readers_whole_journey(
    german_app: tuple[str, Path],
    browser_page: object,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    base, outbox = german_app
    # A phone in Berlin, set to German.
    context = browser_page.context.browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 390, "height": 844},
        timezone_id="Europe/Berlin",
        locale="de-DE",
        accept_downloads=True,
    )
    page = context.new_page()
    page.set_default_timeout(15000)

    # The signup page.
    page.goto(base + "/")
    expect(page.get_by_role("heading", name="Sich in der Beziehung sicher fühlen")).to_be_visible()
    check_page(page, "signup page")
    shot(page, "de-01-signup")
    page.get_by_label("Ihre E-Mail-Adresse").fill("kein-at-zeichen")
    page.get_by_role("button", name="Kostenlosen Kurs beginnen").click()
    expect(page.get_by_role("alert")).to_contain_text("Bitte prüfen Sie das Formular")
    check_page(page, "signup page with an error")
    page.get_by_label("Ihre E-Mail-Adresse").fill("jonas@example.de")
    page.get_by_label(re.compile("Ihr Vorname")).fill("Jonas")
    page.get_by_role("button", name="Kostenlosen Kurs beginnen").click()
    expect(page.get_by_role("heading", name="Fast geschafft")).to_be_visible()
    check_page(page, "thanks page")
    shot(page, "de-02-thanks")

    # The confirmation email, and its page: one button confirms.
    confirmation = check_mail(newest_mail(outbox, "Bitte bestätigen"), "confirmation")
    assert "Hallo," in confirmation  # never a name typed into the form
    page.goto(find(confirmation, "confirm"))
    expect(page.get_by_role("heading", name="Nur noch ein Schritt")).to_be_visible()
    check_page(page, "confirm page")
    shot(page, "de-03-confirm")
    page.get_by_role("button", name="Ja, meinen Kurs beginnen").click()
    expect(page.get_by_role("heading", name="Sie sind dabei. Danke!")).to_be_visible()
    check_page(page, "confirmed page")

    # Lesson 1, with the crisis lines for Germany (from the browser's time zone).
    lesson = check_mail(newest_mail(outbox, "Tag 1 von 5"), "lesson 1")
    assert "Hallo Jonas," in lesson
    assert "TelefonSeelsorge" in lesson and "Im Notfall rufen Sie 112 (Polizei 110) an." in lesson

    # A check-in with one click, and a private note.
    checkins = re.findall(r"http://127\.0\.0\.1:\d+/checkin/\S+", lesson)
    page.goto(checkins[0])  # "Leichter"
    expect(page.get_by_role("status")).to_contain_text("Leichter")
    check_page(page, "check-in page")
    page.get_by_label(re.compile("Schreiben Sie so viel")).fill("Heute war es ruhiger.")
    page.get_by_role("button", name="Notiz speichern").click()
    expect(page.get_by_text("Gespeichert.")).to_be_visible()
    shot(page, "de-04-checkin")

    # The progress page: the answer, the note, the next lesson's time the German way.
    page.goto(find(lesson, "me"))
    expect(page.get_by_text("Rückmeldung: Leichter")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Ihre nächste Lektion kommt am"))).to_contain_text(
        re.compile(r"(Montag|Dienstag|Mittwoch|Donnerstag|Freitag|Samstag|Sonntag), \d+\. ")
    )
    check_page(page, "progress page")
    shot(page, "de-05-progress")

    # Pause from the email's link: the page asks first; then resume.
    page.goto(find(lesson, "pause"))
    expect(page.get_by_role("heading", name="Kurs pausieren?")).to_be_visible()
    check_page(page, "pause page")
    page.get_by_role("button", name="Meinen Kurs pausieren").click()
    expect(page.get_by_role("heading", name="Ihr Kurs ist pausiert.")).to_be_visible()
    check_page(page, "paused page")
    shot(page, "de-06-paused")
    page.get_by_role("button", name="Meinen Kurs fortsetzen").click()
    expect(page.get_by_role("status")).to_contain_text("Willkommen zurück")

    # Export: the download from the progress page is the reader's data.
    page.goto(find(lesson, "me"))
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Meine Daten herunterladen").click()
    saved = tmp_path / "export.json"
    download_info.value.save_as(saved)
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["subscriber"]["email"] == "jonas@example.de"
    assert any(row.get("note") == "Heute war es ruhiger." for row in data["lessons"])

    # Unsubscribe: the page asks, offering a pause first; one button leaves.
    page.goto(find(lesson, "unsubscribe"))
    expect(page.get_by_role("button", name="Lieber pausieren")).to_be_visible()
    check_page(page, "unsubscribe page")
    page.get_by_role("button", name="Abmelden", exact=True).click()
    expect(page.get_by_role("heading", name="Sie sind abgemeldet.")).to_be_visible()
    check_page(page, "unsubscribed page")
    shot(page, "de-07-unsubscribed")
    context.close()
