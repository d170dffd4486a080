"""The ``course`` command: run the app, the scheduler, migrations and operator tasks."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, shell_command, with_appcontext
from werkzeug.serving import run_simple

from course.app import create_app, state
from course.config import ConfigError, Settings
from course.models import utcnow


def _create_app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        # A clear message instead of a traceback: this is the first thing a deployer sees.
        click.echo(f"Configuration error: {exc}", err=True)
        sys.exit(2)


def _settings() -> Settings:
    return state().settings


def configure_logging() -> None:
    """One line per event on stderr, ``key=value`` where it matters, for any log system."""
    logging.basicConfig(
        level=os.environ.get("COURSE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # APScheduler logs every job run at INFO; our own tick line says more.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False)
def main() -> None:
    """The email course engine. Settings come from COURSE_* environment variables."""
    configure_logging()


main.add_command(shell_command)


def register_commands(app: Flask) -> None:
    """Attach the commands to ``app.cli`` (``course`` finds them there, and so do tests)."""
    for command in (
        run_command,
        scheduler_command,
        send_due_command,
        db_group,
        preview_command,
        send_test_command,
    ):
        app.cli.add_command(command)


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Also tick the sending scheduler in this process.",
)
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@with_appcontext
def run_command(host: str, port: int, scheduler: bool, reload: bool) -> None:
    """Development server, with the scheduler in the same process."""
    from course.scheduler import start_background, stop_background

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    # Under the reloader the code runs twice: a watcher parent and the serving child. Only
    # the child (WERKZEUG_RUN_MAIN=true) may start the scheduler, or every tick would run
    # twice.
    is_reloader_parent = reload and os.environ.get("WERKZEUG_RUN_MAIN") != "true"
    background = None
    if scheduler and not is_reloader_parent:
        background = start_background(_settings())
    click.echo(
        f" * Course running at http://{host}:{port}/ (outbox at /dev/outbox)"
        if _settings().mail_url.startswith("outbox:")
        else f" * Course running at http://{host}:{port}/"
    )
    try:
        # Werkzeug directly: Flask ignores app.run() inside its own CLI.
        run_simple(host, port, app, use_reloader=reload, threaded=True)
    finally:
        if background is not None:
            stop_background(*background)


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Tick the sending engine until stopped (run one or more of these in production)."""
    from course.scheduler import run_forever

    run_forever(_settings())


@click.command("send-due")
@with_appcontext
def send_due_command() -> None:
    """Send what is due now, once, and print what happened."""
    from course.scheduler import build_sender

    sender = build_sender(_settings())
    result = sender.tick()
    click.echo(result.log_line())


@click.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Apply migrations (creates the database on first use)."""
    from course.db import upgrade

    upgrade(_settings().database_url, revision)
    click.echo(f"Database is at revision {revision}.")


def _sample(day: int) -> tuple[Any, Any, Any]:
    from course.render import Reader, Renderer

    settings = _settings()
    lessons = state().lessons.current()
    if lessons.get(day) is None:
        reason = next((f"{name}: {why}" for name, why in lessons.errors.items()), "no such lesson")
        raise click.ClickException(f"Lesson {day} cannot be rendered ({reason}).")
    renderer = Renderer(settings, state().signer)
    return renderer, lessons, Reader("sample-reader-id", "reader@example.org", "Sam")


@click.command("preview")
@click.argument("day", type=int)
@click.option("--part", type=click.Choice(["both", "text", "html"]), default="both")
@with_appcontext
def preview_command(day: int, part: str) -> None:
    """Print lesson DAY as a sample reader would get it, without sending."""
    renderer, lessons, reader = _sample(day)
    compiled = renderer.compiled("lesson", day, lessons)
    values = renderer.slot_values(compiled.slots, reader, "lesson", day)
    html, text = compiled.fill(values)
    click.echo(f"Subject: {compiled.subject}\n")
    if part in ("both", "text"):
        click.echo(text)
    if part in ("both", "html"):
        click.echo(html)


@click.command("send-test")
@click.argument("day", type=int)
@click.option("--to", "to", required=True, help="Where to send the test message.")
@with_appcontext
def send_test_command(day: int, to: str) -> None:
    """Send lesson DAY to ADDRESS now, through the configured transport."""
    from email_validator import EmailNotValidError, validate_email

    from course.mail import DeliveryError, transport_from_url
    from course.render import Reader, envelope_address

    try:
        address = validate_email(to, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    renderer, lessons, reader = _sample(day)
    reader = Reader(reader.public_id, address, None)
    message = renderer.build("lesson", day, reader, lessons, utcnow())
    try:
        with transport_from_url(_settings().mail_url).open() as conn:
            conn.send(renderer.envelope_from, envelope_address(address), message)
    except DeliveryError as exc:
        raise click.ClickException(f"Sending failed: {exc}") from None
    click.echo(f"Sent lesson {day} to {address}.")


if __name__ == "__main__":  # pragma: no cover
    main()
