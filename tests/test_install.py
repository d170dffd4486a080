"""The installed product, as a practice's server gets it: no source tree, only the wheel.

The sdist is built from the repository and the wheel from the sdist (``python -m build``),
installed into a new virtual environment outside the repository, and run from an empty
directory: ``course db upgrade``, ``course lessons check``, gunicorn and ``course
scheduler``, against PostgreSQL and a real SMTP server on loopback. A signup through the
form must then bring the confirmation and lesson 1 to that server.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import RecordingHandler
from tests.helpers import REPO, forms, link, local_path, parse

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel (built from the sdist) and nothing else of ours."""
    root = tmp_path_factory.mktemp("install")
    dist = root / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)])
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(dist.glob("course-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("course-*.tar.gz"))
    venv = root / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = _run([str(venv / "bin" / "pip"), "install", "--quiet", f"{wheels[0]}[postgres]"])
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


def _clean_env(**settings: str) -> dict[str, str]:
    """The environment of a fresh server: no COURSE_* of ours, no path into the repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COURSE_", "PYTHON", "VIRTUAL_ENV")) and k not in ("HOST", "PORT")
    }
    env.update(settings)
    return env


def test_help_needs_no_configuration(installed: Path, tmp_path: Path) -> None:
    course = str(installed / "bin" / "course")
    env = _clean_env()
    top = _run([course, "--help"], env=env, cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    commands = [
        line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert {"run", "scheduler", "db", "config", "lessons", "stats"} <= set(commands)
    # Flask's own options mean nothing to an operator.
    assert "--app" not in top.stdout and "--env-file" not in top.stdout
    for command in [*commands, "db upgrade", "lessons check", "admin create"]:
        result = _run([course, *command.split(), "--help"], env=env, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout and "Error" not in result.stderr


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def smtp() -> Iterator[tuple[int, RecordingHandler]]:
    handler = RecordingHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throw-away PostgreSQL schema (the production database)."""
    import uuid

    from sqlalchemy import create_engine, text

    from tests.conftest import PG_URL, _postgres_available, _skip_or_fail

    if not _postgres_available():
        _skip_or_fail("PostgreSQL is not reachable", "COURSE_TEST_REQUIRE_POSTGRES")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_the_wheel_runs_the_whole_product_from_an_empty_directory(
    installed: Path, tmp_path: Path, smtp: tuple[int, RecordingHandler], pg_url: str
) -> None:
    smtp_port, handler = smtp
    web_port = _free_port()
    base = f"http://127.0.0.1:{web_port}"
    server = tmp_path / "srv"
    server.mkdir()
    env = _clean_env(
        COURSE_DATABASE_URL=pg_url,
        COURSE_MAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
        COURSE_SECRET_KEY=secrets.token_hex(32),
        COURSE_DATA_KEYS=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        COURSE_BASE_URL=base,
        COURSE_MAIL_FROM="Harbor Therapy <course@harbor.example.org>",
        COURSE_BOOKING_URL="https://harbor.example.org/book",
        COURSE_PRACTICE_NAME="Harbor Therapy",
        COURSE_TICK_SECONDS="0.5",
        COURSE_SIGNUP_MIN_SECONDS="0",
    )
    bin_ = installed / "bin"
    upgrade = _run([str(bin_ / "course"), "db", "upgrade"], env=env, cwd=server)
    assert upgrade.returncode == 0, upgrade.stderr
    check = _run([str(bin_ / "course"), "lessons", "check"], env=env, cwd=server)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("OK lesson") == 5 and "site-packages" in check.stdout
    web = subprocess.Popen(
        [str(bin_ / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{web_port}"]
        + ["course.wsgi:app"],
        env=env,
        cwd=server,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sender = subprocess.Popen(
        [str(bin_ / "course"), "scheduler"],
        env=env,
        cwd=server,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(lambda: _answers(f"{base}/healthz/web"), 60, "gunicorn")
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with browser.open(f"{base}/", timeout=10) as page:
            form = forms(page.read().decode())[0]
        form.fields.update(email="ana@example.com", name="Ana")
        body = urllib.parse.urlencode(form.fields).encode()
        with browser.open(urllib.parse.urljoin(f"{base}/", form.action), body, 10) as answer:
            assert answer.status == 200 and answer.url == f"{base}/thanks"

        _wait(lambda: len(handler.messages) >= 1, 30, "the confirmation email")
        confirmation = handler.messages[0]
        assert confirmation.rcpt_tos == ["ana@example.com"]
        assert "confirm" in parse(confirmation.data)["Subject"].lower()
        _confirm_as_a_person(browser, link(confirmation.data, "confirm"))

        _wait(lambda: len(handler.messages) >= 2, 30, "lesson 1")
        lesson = parse(handler.messages[1].data)
        assert lesson["Subject"].startswith("Day 1 of 5")
        assert f"{base}/unsubscribe/" in lesson["List-Unsubscribe"]
        _wait(lambda: _healthy(f"{base}/healthz"), 30, "a healthy /healthz")
    finally:
        for proc in (web, sender):
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30)[0] for proc in (web, sender)]
    assert sender.returncode == 0, outputs[1]
    assert "Traceback" not in outputs[0] + outputs[1]
    assert "content problem" not in outputs[0] + outputs[1]


def _confirm_as_a_person(browser: urllib.request.OpenerDirector, url: str) -> None:
    """Open the confirmation link; if the page asks for a click, click its button."""
    with browser.open(url, timeout=10) as page:
        html = page.read().decode()
    buttons = [f for f in forms(html) if f.method == "post"]
    if buttons:
        target = urllib.parse.urljoin(url, buttons[0].action or local_path(url))
        data = urllib.parse.urlencode(buttons[0].fields).encode()
        with browser.open(target, data, 10) as answer:
            assert answer.status == 200


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
