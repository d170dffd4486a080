"""End to end in headless Chromium: the reader's whole journey against a real `course run`.

Uses Debian's Chromium (/usr/bin/chromium) through Playwright; no browser is downloaded.
Screenshots of each page are saved under tests/artifacts/.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class _BookingPage(BaseHTTPRequestHandler):
    """Stands in for the practice's booking site."""

    def do_GET(self) -> None:  # noqa: N802
        body = b"<!doctype html><title>Book</title><h1>Booking page</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def booking_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BookingPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/book"
    server.shutdown()
    server.server_close()


BOOKING_SECRET = "browser-test-booking-webhook-secret"


@contextmanager
def course_run(tmp_path: Path, *args: str, **settings: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`course run` in a subprocess, as `make run` starts it, on a fresh SQLite database
    with the mail outbox in ``tmp_path``; ``settings`` (COURSE_*) on top of the
    development defaults, ``args`` after ``course run``. Yields its address and
    environment."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env.update(
        COURSE_ENV="development",
        # The development keys land here, not in ./instance of whoever runs the tests.
        COURSE_INSTANCE_DIR=str(tmp_path / "instance"),
        COURSE_DATABASE_URL=f"sqlite:///{tmp_path / 'course.db'}",
        COURSE_MAIL_URL=f"outbox:{tmp_path / 'outbox'}",
        COURSE_SECRET_KEY="browser-test-secret-key-0123456789abcdef",
        COURSE_BASE_URL=base,
        **settings,
    )
    course = str(Path(sys.executable).parent / "course")
    subprocess.run([course, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [course, "run", "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(base + "/")
        yield base, env
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture
def live_app(tmp_path: Path, booking_site: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`course run` in a subprocess, as `make run` starts it, on a fresh database."""
    with course_run(
        tmp_path,
        COURSE_BOOKING_URL=booking_site,
        COURSE_PRACTICE_NAME="Harbor Therapy",
        COURSE_TICK_SECONDS="0.5",
        COURSE_LESSON_INTERVAL="3600",
        COURSE_CARE_EMAIL="care@harbor.example.org",
        # The practice's booking system reports bookings through the generic webhook.
        COURSE_BOOKING_WEBHOOK_SECRET=BOOKING_SECRET,
    ) as running:
        yield running


def _booking_webhook(base: str, body: dict[str, str]) -> None:
    """Call the generic booking webhook as a booking system would (docs/operators.md)."""
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(BOOKING_SECRET.encode(), stamp.encode() + b"." + raw, "sha256")
    call = Request(
        base + "/webhooks/bookings/generic",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "X-Course-Timestamp": stamp,
            "X-Course-Signature": f"sha256={signature.hexdigest()}",
        },
    )
    with urlopen(call, timeout=10) as answer:
        assert answer.status == 200


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        message = (
            f"Chromium is not installed at {CHROMIUM}. Install it with "
            "`apt-get install -y chromium` (Debian's package; no browser download is needed)."
        )
        if os.environ.get("COURSE_TEST_REQUIRE_BROWSER"):
            pytest.fail(message + " COURSE_TEST_REQUIRE_BROWSER is set.")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
        context.close()
        browser.close()


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def open_newest_mail(page: object, base: str, subject_part: str, timeout: float = 20) -> str:
    """Open the newest outbox message whose subject contains ``subject_part``; its text part."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(base + "/dev/outbox")  # type: ignore[attr-defined]
        link = page.get_by_role("link", name=re.compile(subject_part))  # type: ignore[attr-defined]
        if link.count():
            link.first.click()
            return str(page.locator("pre.text-part").inner_text())  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail with {subject_part!r} in the outbox")
        time.sleep(0.5)


def find(text: str, path: str) -> str:
    match = re.search(rf"http://127\.0\.0\.1:\d+/{path}/\S+", text)
    assert match, f"no {path} link"
    return match.group(0)


def _create_operator(env: dict[str, str], email: str, password: str) -> None:
    """What the deployer does: ``course admin create EMAIL``, typing the password twice."""
    course = str(Path(sys.executable).parent / "course")
    result = subprocess.run(
        [course, "admin", "create", email],
        env=env,
        capture_output=True,
        text=True,
        input=f"{password}\n{password}\n",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr


def test_the_readers_whole_journey(
    live_app: tuple[str, dict[str, str]], browser_page: object, booking_site: str
) -> None:
    from playwright.sync_api import expect

    base, _env = live_app
    page = browser_page

    # Sign up on the hosted page.
    page.goto(base + "/")  # type: ignore[attr-defined]
    shot(page, "01-signup")
    page.get_by_label("Your email address").fill("reader@example.com")  # type: ignore[attr-defined]
    page.get_by_label(re.compile("Your first name")).fill("Robin")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Start the free course").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", name="Almost there")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "02-thanks")

    # Confirm from the outbox.
    confirmation = open_newest_mail(page, base, "confirm")
    shot(page, "03-confirmation-mail")
    page.goto(find(confirmation, "confirm"))  # type: ignore[attr-defined]
    # Opening the link confirms nothing (a mail scanner opens it too): one button does.
    expect(page.get_by_role("heading", name="One last step")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "03b-confirm-button")
    page.get_by_role("button", name="Yes, start my course").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", name=re.compile("You're in"))).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "04-confirmed")

    # Lesson 1 arrives.
    lesson = open_newest_mail(page, base, "Day 1 of 5")
    shot(page, "05-lesson-1-mail")
    assert "Hi Robin," in lesson

    # Check in with one click, then mark the exercise done.
    page.goto(find(lesson, "checkin"))  # type: ignore[attr-defined]
    expect(page.get_by_role("status")).to_contain_text("Lighter")  # type: ignore[attr-defined]
    page.get_by_label(re.compile("Only you")).fill("Felt calmer after writing.")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Save note").click()  # type: ignore[attr-defined]
    expect(page.get_by_text("Saved.")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "06-checkin")
    page.goto(find(lesson, "done"))  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", name="Well done.")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "07-done")

    # The progress page; pause and resume.
    page.goto(find(lesson, "me"))  # type: ignore[attr-defined]
    expect(page.get_by_text("Check-in: Lighter")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.get_by_text("✓ Exercise done")).to_be_visible()  # type: ignore[attr-defined]
    note = page.get_by_label(re.compile("Only you")).first  # type: ignore[attr-defined]
    expect(note).to_have_value("Felt calmer after writing.")
    shot(page, "08-progress")
    page.get_by_role("button", name="Pause the course").click()  # type: ignore[attr-defined]
    expect(page.get_by_text("Your course is paused.")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "09-paused")
    page.get_by_role("button", name="Resume the course").click()  # type: ignore[attr-defined]
    expect(page.get_by_text(re.compile("Your next lesson arrives on"))).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "10-resumed")

    # Book a session: lands on the practice's booking page with the UTM parameters.
    page.goto(find(lesson, "book"))  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", name="Booking page")).to_be_visible()  # type: ignore[attr-defined]
    landed = urlsplit(page.url)  # type: ignore[attr-defined]
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == booking_site
    query = parse_qs(landed.query)
    (ref,) = query.pop("course_ref")  # opaque: names the reader to our webhook only
    assert "@" not in ref and "robin" not in ref.lower()
    assert query == {
        "utm_source": ["course"],
        "utm_medium": ["email"],
        "utm_campaign": ["lesson-1"],
    }
    shot(page, "11-booking")
    # The reader books; the booking system tells the course, passing the reference back.
    _booking_webhook(base, {"event": "booking.confirmed", "id": "bk-1", "ref": ref})

    # The practice's side: an operator signs in and sees this reader's answers.
    operator_password = "a long operator password"
    _create_operator(_env, "therapist@harbor.example.org", operator_password)
    page.goto(base + "/admin/")  # type: ignore[attr-defined]
    page.get_by_label("Email").fill("therapist@harbor.example.org")  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(operator_password)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", name="Course dashboard")).to_be_visible()  # type: ignore[attr-defined]
    lessons = page.get_by_role("region", name="Lessons")  # type: ignore[attr-defined]
    lesson_row = lessons.get_by_role("row", name=re.compile(r"^1\. Where insecurity"))
    # Delivered 1, viewed 0, done 1, lighter 1, same 0, stirred 0, booking clicks 1.
    expect(lesson_row.get_by_role("cell")).to_have_text(["1", "0", "1", "1", "0", "0", "1", "0"])
    # The click and the booking the webhook reported, side by side, by lesson and source.
    bookings = page.get_by_role("region", name="Bookings")  # type: ignore[attr-defined]
    booked = bookings.get_by_role("row", name=re.compile(r"^1\. Where insecurity"))
    # Clicked 1, booked 1: via cal.com 0, calendly 0, generic 1.
    expect(booked.get_by_role("cell")).to_have_text(["1", "1", "0", "0", "1"])
    shot(page, "14-admin-dashboard")
    page.set_viewport_size({"width": 1280, "height": 900})  # type: ignore[attr-defined]
    shot(page, "15-admin-dashboard-wide")
    page.get_by_role("link", name="Subscribers").click()  # type: ignore[attr-defined]
    page.get_by_role("link", name="reader@example.com").click()  # type: ignore[attr-defined]
    expect(page.get_by_text(re.compile(r"Checked in on lesson 1: lighter"))).to_be_visible()  # type: ignore[attr-defined]
    expect(page.get_by_text(re.compile(r"Clicked “Book a session” in lesson 1"))).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "16-admin-subscriber")
    page.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]

    # Unsubscribe: the page asks, one button does it.
    page.goto(find(lesson, "unsubscribe"))  # type: ignore[attr-defined]
    shot(page, "12-unsubscribe-ask")
    page.get_by_role("button", name="Unsubscribe").click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", name="You're unsubscribed.")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "13-unsubscribed")


def test_a_reader_in_a_hard_moment_reaches_a_person(
    live_app: tuple[str, dict[str, str]], browser_page: object
) -> None:
    """The "It stirred things up" page leads with care (the crisis box for the reader's
    country, a booking link, reassurance), and the practice finds the reader on "Needs a
    look", alerted without the note's words."""
    from playwright.sync_api import expect

    base, env = live_app
    # A phone in London: the signup form takes its time zone from the browser.
    context = browser_page.context.browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 390, "height": 844}, timezone_id="Europe/London"
    )
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(base + "/")
    page.get_by_label("Your email address").fill("sam@example.com")
    page.get_by_role("button", name="Start the free course").click()
    expect(page.get_by_role("heading", name="Almost there")).to_be_visible()
    page.goto(find(open_newest_mail(page, base, "confirm"), "confirm"))
    page.get_by_role("button", name="Yes, start my course").click()
    lesson = open_newest_mail(page, base, "Day 1 of 5")
    assert "Samaritans" in lesson  # the UK's line, from the time zone

    # "It stirred things up", straight from the email.
    stirred = [u for u in re.findall(r"http://127\.0\.0\.1:\d+/checkin/\S+", lesson)][-1]
    page.goto(stirred)
    expect(page.get_by_role("heading", name="Thank you for telling us.")).to_be_visible()
    crisis = page.get_by_role("region", name="If you need help right now")
    expect(crisis).to_be_visible()
    expect(crisis).to_contain_text("Samaritans")
    expect(crisis.get_by_role("link", name="116 123")).to_have_attribute("href", "tel:116123")
    expect(page.get_by_text("That is a normal reaction.")).to_be_visible()
    expect(page.get_by_role("link", name="Book a session")).to_be_visible()
    # The crisis box comes before the booking link and the note form, on a phone's screen.
    box = crisis.bounding_box()
    assert (
        box is not None
        and box["y"] < page.get_by_role("link", name="Book a session").bounding_box()["y"]
    )
    font = crisis.locator("p").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    size = "e => parseFloat(getComputedStyle(e).fontSize)"
    body = page.get_by_text("That is a normal reaction.").evaluate(size)
    fine = page.locator("p.fine").first.evaluate(size)
    assert font >= body > fine  # as large as the page's text, not the small print
    expect(page.get_by_text("not monitored around the clock")).to_be_visible()
    page.get_by_label(re.compile("Only you")).fill("Some nights I feel there is no way out.")
    page.get_by_role("button", name="Save note").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    shot(page, "20-stirred")

    # The practice: an alert without the words, and the reader on "Needs a look".
    alert = open_newest_mail(page, base, "need a look")
    assert "/admin/care" in alert and "no way out" not in alert and "sam@" not in alert
    _create_operator(env, "owner@harbor.example.org", "a long operator password")
    page.goto(base + "/admin/")
    page.get_by_label("Email").fill("owner@harbor.example.org")
    page.get_by_label("Password").fill("a long operator password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name=re.compile("Needs a look")).click()
    expect(page.get_by_role("heading", name="Needs a look")).to_be_visible()
    rows = page.locator("table.care tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Urgent:")
    expect(rows.nth(0)).to_contain_text("no way out")  # the phrase that matched, as listed
    expect(rows.nth(1)).to_contain_text("Stirred things up")
    shot(page, "21-needs-a-look")
    rows.nth(0).get_by_role("button", name=re.compile("^Contacted")).click()
    expect(page.locator("table.care tbody tr").nth(0)).to_contain_text(
        "Contacted by owner@harbor.example.org"
    )
    context.close()
