"""The ``course`` command: migrations, preview, send-test, send-due, and startup errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiosmtpd.controller import Controller

from tests.conftest import CourseRunner, RecordingHandler
from tests.helpers import parse


def test_preview_prints_both_parts(runner: CourseRunner) -> None:
    result = runner.invoke(args=["preview", "3"])
    assert result.exit_code == 0, result.output
    assert "Subject: Day 3 of 5" in result.output
    assert "Day 3 of 5: Becoming kinder to yourself\n=====" in result.output  # text part
    assert "<!DOCTYPE html>" in result.output  # HTML part


def test_preview_of_a_missing_lesson_is_a_clear_error(runner: CourseRunner) -> None:
    result = runner.invoke(args=["preview", "9"])
    assert result.exit_code != 0
    assert "The course has 5 lessons; there is no 9." in result.output


def test_send_test_goes_through_the_configured_transport(
    tmp_path: Path, sqlite_url: str, smtp_server: tuple[Controller, RecordingHandler]
) -> None:
    from course.app import create_app
    from tests.conftest import make_config

    controller, handler = smtp_server
    app = create_app(
        make_config(tmp_path, sqlite_url, MAIL_URL=f"smtp://127.0.0.1:{controller.port}")
    )
    result = CourseRunner(app).invoke(args=["send-test", "2", "--to", "me@example.org"])
    assert result.exit_code == 0, result.output
    assert parse(handler.messages[0].data)["Subject"].startswith("[Test] Day 2 of 5")
    bad = CourseRunner(app).invoke(args=["send-test", "2", "--to", "not an address"])
    assert bad.exit_code == 2 and "--to" in bad.output
    app.extensions["course"].engine.dispose()


def test_send_due_reports_what_it_did(runner: CourseRunner, client) -> None:  # type: ignore[no-untyped-def]
    client.post("/subscribe", json={"email": "ana@example.com"})
    result = runner.invoke(args=["send-due"])
    assert result.exit_code == 0
    assert "due=1 sent=1" in result.output


def _course(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    course = Path(sys.executable).parent / "course"
    return subprocess.run(
        [str(course), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env.update(extra)
    return env


def test_production_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = _course(
        ["scheduler"],
        _clean_env(COURSE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"),
        tmp_path,
    )
    assert result.returncode == 2
    assert "COURSE_SECRET_KEY is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    db = tmp_path / "new" / "course.db"
    result = _course(
        ["db", "upgrade"],
        _clean_env(
            COURSE_DATABASE_URL=f"sqlite:///{db}",
            COURSE_SECRET_KEY="cli-test-" + "0123456789abcdef" * 3,
        ),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert db.exists()


def test_bad_setting_is_reported_clearly(tmp_path: Path) -> None:
    result = _course(
        ["db", "upgrade"],
        _clean_env(
            COURSE_SECRET_KEY="cli-test-" + "0123456789abcdef" * 3,
            COURSE_SEND_HOUR="25",
            COURSE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        ),
        tmp_path,
    )
    assert result.returncode == 2
    assert "COURSE_SEND_HOUR: Input should be less than or equal to 23 (got '25')" in result.stderr
