"""One configuration: declared settings, safe production defaults, development's conveniences."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from course.app import create_app
from course.cli import main
from course.config import (
    ALL_NEEDS,
    RESERVED_PREFIXES,
    ConfigError,
    Settings,
    load_settings,
    markdown_table,
)
from tests.conftest import DATA_KEY, make_config, outbox_messages
from tests.helpers import REPO, forms, link

COURSE = str(Path(sys.executable).parent / "course")


def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("COURSE_") or name in ("HOST", "PORT"):
            monkeypatch.delenv(name)


# -- the README and the declared settings ----------------------------------------------------


def test_the_readme_table_is_the_declared_settings() -> None:
    """The table between the markers is exactly what `course config --markdown` prints."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- settings:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end] == markdown_table(), (
        "README.md's settings table differs from course/config.py: paste the output of "
        "`course config --markdown` between the markers"
    )


def test_every_setting_is_documented_and_in_the_table() -> None:
    table = markdown_table()
    for name, field in Settings.model_fields.items():
        assert field.description, f"COURSE_{name.upper()} has no description"
        assert f"| `COURSE_{name.upper()}` |" in table


def test_every_course_variable_in_the_docs_is_a_setting() -> None:
    """No doc mentions a COURSE_* variable that the app would ignore."""
    known = {f"COURSE_{name.upper()}" for name in Settings.model_fields}
    docs = [REPO / "README.md", REPO / "SECURITY.md", *(REPO / "docs").glob("*.md")]
    docs += list((REPO / "deploy").iterdir())
    for path in docs:
        text = path.read_text()
        for name in set(re.findall(r"\bCOURSE_[A-Z0-9_]*[A-Z0-9]", text)):
            if f"{name} is not a setting" in text:
                continue  # the example of a typo's warning
            assert name in known or name.startswith(RESERVED_PREFIXES), f"{path.name}: {name}"


# -- production: nothing essential has a default ----------------------------------------------


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("MAIL_URL", "COURSE_MAIL_URL is required outside development"),
        ("DATABASE_URL", "COURSE_DATABASE_URL is required outside development"),
        ("SECRET_KEY", "COURSE_SECRET_KEY is required outside development"),
        ("BASE_URL", "COURSE_BASE_URL is required outside development"),
        ("MAIL_FROM", "COURSE_MAIL_FROM is required outside development"),
        ("BOOKING_URL", "COURSE_BOOKING_URL is required outside development"),
    ],
)
def test_production_refuses_to_start_without_an_essential_setting(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, missing: str, named: str
) -> None:
    _clean_environ(monkeypatch)
    config = make_config(tmp_path, sqlite_url)
    del config[missing]
    with pytest.raises(ConfigError, match=named):
        create_app(config)


def test_without_a_mail_transport_the_scheduler_and_gunicorn_refuse_with_a_clear_message(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env.update(
        COURSE_DATABASE_URL=sqlite_url,
        COURSE_SECRET_KEY="a" + os.urandom(24).hex(),
        COURSE_BASE_URL="https://course.example.org",
        COURSE_MAIL_FROM="Practice <course@example.org>",
        COURSE_BOOKING_URL="https://example.org/book",
    )
    for args in ([COURSE, "scheduler"], [sys.executable, "-c", "import course.wsgi"]):
        result = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert "COURSE_MAIL_URL is required outside development" in result.stderr
        assert "outbox:/path" in result.stderr  # how to choose the outbox on purpose
        assert "Traceback" not in result.stderr


def test_the_outbox_is_allowed_in_production_only_when_set_explicitly(
    tmp_path: Path, sqlite_url: str
) -> None:
    app = create_app(make_config(tmp_path, sqlite_url, MAIL_URL=f"outbox:{tmp_path / 'box'}"))
    assert app.extensions["course"].settings.mail_url == f"outbox:{tmp_path / 'box'}"
    app.extensions["course"].engine.dispose()


@pytest.mark.parametrize("mail_url", ["outbox:", "smtp://127.0.0.1:2525"])
def test_dev_pages_do_not_exist_outside_development_whatever_the_transport(
    tmp_path: Path, sqlite_url: str, mail_url: str
) -> None:
    app = create_app(make_config(tmp_path, sqlite_url, MAIL_URL=mail_url))
    client = app.test_client()
    for path in ("/dev/outbox", "/dev/outbox/1-a.eml", "/dev/"):
        assert client.get(path).status_code == 404
    app.extensions["course"].engine.dispose()


def test_dev_pages_exist_in_development(tmp_path: Path, sqlite_url: str) -> None:
    app = create_app(make_config(tmp_path, sqlite_url, ENV="development"))
    assert app.test_client().get("/dev/outbox").status_code == 200
    app.extensions["course"].engine.dispose()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("ENV", "testing", "COURSE_ENV: must be development or production"),
        ("SEND_HOUR", "24", "COURSE_SEND_HOUR"),
        ("TICK_SECONDS", "soon", "COURSE_TICK_SECONDS"),
        ("DEFAULT_TIMEZONE", "Mars/Olympus", "COURSE_DEFAULT_TIMEZONE: is not a known time zone"),
        ("BASE_URL", "course.example.org", "COURSE_BASE_URL: must start with http"),
        ("MAIL_URL", "sendmail:", "COURSE_MAIL_URL: must start with smtp://"),
        ("ALLOWED_ORIGINS", "https://ok.example,*.evil", "COURSE_ALLOWED_ORIGINS"),
        ("SUBSCRIBE_LIMIT_PER_CLIENT", "lots", "COURSE_SUBSCRIBE_LIMIT_PER_CLIENT"),
        ("LOG_LEVEL", "LOUD", "COURSE_LOG_LEVEL"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, message: str
) -> None:
    _clean_environ(monkeypatch)
    monkeypatch.setenv(f"COURSE_{setting}", value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings()


def test_values_come_from_the_environment_with_types_and_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_environ(monkeypatch)
    monkeypatch.setenv("COURSE_SEND_HOUR", "7")
    monkeypatch.setenv("COURSE_CHECK_DELIVERABILITY", "true")
    monkeypatch.setenv("COURSE_ALLOWED_ORIGINS", "https://a.example, https://B.example:443/")
    monkeypatch.setenv("COURSE_LESSON_INTERVAL", "")  # empty means unset
    settings = load_settings()
    assert settings.send_hour == 7 and settings.check_deliverability is True
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.lesson_interval is None


def test_a_misspelt_variable_gets_a_warning_naming_the_real_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _clean_environ(monkeypatch)
    monkeypatch.setenv("COURSE_SEND_HOURS", "9")
    monkeypatch.setenv("COURSE_MAIL_ULR", "smtp://relay.example")
    with caplog.at_level(logging.WARNING, logger="course.config"):
        settings = load_settings()
    assert settings.send_hour == 8  # the typo changed nothing
    text = caplog.text
    assert (
        "COURSE_SEND_HOURS is not a setting and is ignored; did you mean COURSE_SEND_HOUR?" in text
    )
    assert "did you mean COURSE_MAIL_URL?" in text


def test_a_misspelt_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="COURSE_SEND_HOURS is not a setting; did you mean"):
        load_settings({"SEND_HOURS": 9})


# -- development --------------------------------------------------------------------------


def test_development_fills_in_a_laptops_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environ(monkeypatch)
    monkeypatch.setenv("COURSE_ENV", "development")
    monkeypatch.setenv("COURSE_INSTANCE_DIR", str(tmp_path / "inst"))
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'inst' / 'course.db'}"
    assert settings.mail_url == f"outbox:{tmp_path / 'inst' / 'outbox'}"
    assert settings.base_url == "http://127.0.0.1:5000"
    assert settings.secret_keys == ((tmp_path / "inst" / "secret_key").read_text().strip(),)
    assert settings.problems(ALL_NEEDS) == []


def test_in_development_email_links_follow_port_and_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PORT=5100 make run` serves on 5100: the links in its emails must point there too."""
    _clean_environ(monkeypatch)
    monkeypatch.setenv("COURSE_ENV", "development")
    monkeypatch.setenv("COURSE_INSTANCE_DIR", str(tmp_path / "inst"))
    monkeypatch.setenv("PORT", "5100")
    from course.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    app = create_app(settings=settings)
    client = app.test_client()
    form = forms(client.get("/").get_data(as_text=True))[0]
    form.fields.update(email="ana@example.com")
    assert client.post("/subscribe", data=form.fields).status_code == 303
    from course.scheduler import build_sender

    sender = build_sender(settings)
    assert sender.tick().sent == 1
    sender.engine.dispose()
    confirm_url = link(outbox_messages(settings)[0], "confirm")
    assert confirm_url.startswith("http://127.0.0.1:5100/confirm/")
    app.extensions["course"].engine.dispose()

    monkeypatch.setenv("HOST", "0.0.0.0")  # a listening address: links use 127.0.0.1
    assert load_settings().base_url == "http://127.0.0.1:5100"
    assert load_settings(listen=("localhost", 8080)).base_url == "http://localhost:8080"
    monkeypatch.setenv("COURSE_BASE_URL", "https://course.example.org")
    assert load_settings(listen=("localhost", 8080)).base_url == "https://course.example.org"


# -- the command line ---------------------------------------------------------------------


def _invoke(args: list[str], **env: str) -> Any:
    clean = {k: None for k in os.environ if k.startswith("COURSE_") or k in ("HOST", "PORT")}
    return CliRunner().invoke(main, args, env={**clean, **env})


def test_help_works_with_an_empty_environment() -> None:
    commands = list(main.commands)  # type: ignore[attr-defined]
    assert {"run", "scheduler", "send-due", "db", "config", "stats", "lessons"} <= set(commands)
    result = _invoke(["--help"])
    assert result.exit_code == 0 and "--app" not in result.output
    for name in commands:
        result = _invoke([name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: " in result.output


def test_commands_ask_only_for_what_they_need(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade = _invoke(["db", "upgrade"], COURSE_DATABASE_URL=db)
    assert upgrade.exit_code == 0, upgrade.output
    stats = _invoke(["stats"], COURSE_DATABASE_URL=db)
    assert stats.exit_code == 0, stats.output
    no_db = _invoke(["stats"])
    assert no_db.exit_code == 2
    assert "COURSE_DATABASE_URL is required" in no_db.output
    assert "COURSE_MAIL_URL" not in no_db.output  # stats sends nothing
    check = _invoke(["lessons", "check"])  # no database, no key: it only renders
    assert check.exit_code == 0, check.output


def test_course_config_prints_the_effective_configuration_with_secrets_masked() -> None:
    key = "k3y-" + os.urandom(20).hex()
    result = _invoke(
        ["config"],
        COURSE_SECRET_KEY=key,
        COURSE_DATABASE_URL="postgresql+psycopg://course:hunter2@db.internal/course",
        COURSE_MAIL_URL="smtp+starttls://user:pa55word@relay.example:587",
    )
    assert key not in result.output and "hunter2" not in result.output
    assert "pa55word" not in result.output
    assert "postgresql+psycopg://course:***@db.internal/course" in result.output
    assert re.search(r"COURSE_SEND_HOUR +8", result.output)
    assert result.exit_code == 1  # production, and the public addresses are missing
    assert "COURSE_BASE_URL is required" in result.output


def test_course_config_markdown_is_the_table() -> None:
    assert _invoke(["config", "--markdown"]).output == markdown_table()


def test_the_app_uses_flask_config_derived_from_the_settings(app: Flask) -> None:
    settings = app.extensions["course"].settings
    assert app.config["SECRET_KEY"] == settings.secret_keys[-1]
    assert app.config["RATELIMIT_STORAGE_URI"] == settings.ratelimit_storage_url
    assert app.config["SESSION_COOKIE_SECURE"] is True  # https base URL


def test_the_development_server_does_not_run_in_production(tmp_path: Path) -> None:
    result = _invoke(
        ["run"],
        COURSE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        COURSE_MAIL_URL="smtp://127.0.0.1:2525",
        COURSE_SECRET_KEY="b" + os.urandom(24).hex(),
        COURSE_BASE_URL="https://course.example.org",
        COURSE_MAIL_FROM="Practice <course@example.org>",
        COURSE_BOOKING_URL="https://example.org/book",
        COURSE_DATA_KEYS=DATA_KEY,
    )
    assert result.exit_code == 2
    assert "course run is the development server" in result.output


def test_the_course_command_masks_addresses_in_its_logs(tmp_path: Path) -> None:
    """`course scheduler` never builds the Flask app; its log lines are masked all the same."""
    code = (
        "import logging, sys; from course.logs import configure_logging; configure_logging(); "
        "logging.getLogger('x').warning('refused ana.lopez@example.com at /confirm/abc.def')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "ana.lopez@" not in result.stderr and "a***@example.com" in result.stderr
    assert "/confirm/[token]" in result.stderr
