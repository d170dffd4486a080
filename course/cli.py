"""The ``course`` command: run the app, the senders, migrations and operator tasks.

Every command and its ``--help`` work with no configuration at all. A command reads the
configuration only when it runs, and asks only for what it needs (``course db upgrade``
needs a database; ``course scheduler`` needs a database, a mail transport, a secret key and
the public addresses). A missing setting stops it with a message naming the setting.

Tests pass a ready :class:`~course.runtime.CourseState` as the click context's ``obj``;
otherwise one is built from the environment on first use.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import SecretStr

from course.config import (
    ALL_NEEDS,
    ConfigError,
    Need,
    Settings,
    effective,
    load_settings,
    markdown_table,
    unknown_variables,
)
from course.doctor_cli import doctor_command
from course.logs import install_log_masking
from course.models import utcnow

if TYPE_CHECKING:
    from course.importer import ImportResult
    from course.lessons import LessonSet
    from course.render import Renderer
    from course.runtime import CourseState


class ConfigProblem(click.ClickException):
    """The configuration does not allow this command (exit code 2)."""

    exit_code = 2

    def format_message(self) -> str:
        return "Configuration error:\n  " + self.message.replace("\n", "\n  ")


def configure_logging(level: str = "INFO") -> None:
    """One line per event on stderr, ``key=value`` where it matters, for any log system;
    addresses, link tokens and SQL values masked (``course.logs``)."""
    install_log_masking()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(level)
    # APScheduler logs every job run at INFO, and Alembic its plugins; our own lines say more.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _root() -> click.Context:
    return click.get_current_context().find_root()


def _settings(*needs: Need, listen: tuple[str, int] | None = None) -> Settings:
    """The configuration, checked for ``needs`` (``listen``: where ``course run`` serves)."""
    obj = _root().obj
    if obj is not None:
        return obj.settings  # type: ignore[no-any-return]
    try:
        settings = load_settings(listen=listen).require(*needs)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    configure_logging(settings.log_level)
    return settings


def _state(*needs: Need) -> CourseState:
    """The configured engine parts (built once per command, closed at its end)."""
    from course.runtime import CourseState

    root = _root()
    if root.obj is None:
        state = CourseState.build(_settings(*needs))
        root.call_on_close(state.close)
        root.obj = state
    return root.obj  # type: ignore[no-any-return]


def _content() -> tuple[Renderer, LessonSet]:
    """A renderer and the lessons, for commands that only render (no database, no key).

    Without a secret key (a fresh server), links are signed with a throw-away key: the
    output shows what readers get, but its links do not work.
    """
    from course.lessons import load_lessons
    from course.render import Renderer
    from course.resources import lessons_dir
    from course.tokens import Signer

    obj = _root().obj
    settings = obj.settings if obj is not None else _settings()
    if not settings.secret_keys:
        import secrets

        settings = settings.model_copy(update={"secret_key": SecretStr(secrets.token_hex(32))})
    # Read from disk now rather than through a cached library.
    return Renderer(settings, Signer(settings.secret_keys)), load_lessons(lessons_dir(settings))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="course")
def main() -> None:
    """The email course engine. Settings come from COURSE_* environment variables
    (see `course config`)."""
    configure_logging()


@main.command("run")
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="PORT", default=5000, show_default=True, type=int)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Also tick the sending scheduler in this process.",
)
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
def run_command(host: str, port: int, scheduler: bool, reload: bool) -> None:
    """Development server, with the scheduler in the same process.

    In development, email links follow --host and --port unless COURSE_BASE_URL is set.
    """
    from werkzeug.serving import run_simple

    from course.app import create_app
    from course.scheduler import start_background, stop_background

    settings = _settings(*ALL_NEEDS, listen=(host, port))
    if not settings.development:
        # Werkzeug's server is for one person on a laptop, not for the internet.
        raise ConfigProblem(
            "course run is the development server (COURSE_ENV=development). In production "
            "run gunicorn course.wsgi:app and course scheduler (see the README)."
        )
    app = create_app(settings=settings)
    # Under the reloader the code runs twice: a watcher parent and the serving child. Only
    # the child (WERKZEUG_RUN_MAIN=true) may start the scheduler, or every tick would run
    # twice.
    is_reloader_parent = reload and os.environ.get("WERKZEUG_RUN_MAIN") != "true"
    background = None
    if scheduler and not is_reloader_parent:
        background = start_background(settings)
    where = f"http://{host}:{port}/"
    extra = " (outbox at /dev/outbox)" if settings.development and settings.uses_outbox else ""
    click.echo(f" * Course running at {where}{extra}; links in emails use {settings.base_url}")
    try:
        run_simple(host, port, app, use_reloader=reload, threaded=True)
    finally:
        if background is not None:
            stop_background(*background)


@main.command("scheduler")
def scheduler_command() -> None:
    """Tick the sending engine until stopped (run one or more of these in production)."""
    from course.scheduler import run_forever

    run_forever(_settings(*ALL_NEEDS))


@main.command("send-due")
def send_due_command() -> None:
    """Send what is due now, once, and print what happened."""
    from course.scheduler import build_sender
    from course.signups import decide_signups

    sender = build_sender(_settings(*ALL_NEEDS))
    try:
        decide_signups(sender.sessions, sender.settings, clock=sender.clock)
        result = sender.tick()
    finally:
        sender.engine.dispose()
    click.echo(result.log_line())


@main.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations (creates the database on first use)."""
    from course.db import upgrade

    upgrade(_settings(Need.DATABASE).database_url, revision)
    click.echo(f"Database is at revision {revision}.")


@main.command("config")
@click.option("--markdown", is_flag=True, help="Print the table of all settings (README).")
def config_command(markdown: bool) -> None:
    """Print the effective configuration (secrets masked) and what is missing."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    rows = effective(settings)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")
    for name, close in unknown_variables(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        click.echo(f"warning: {name} is not a setting{hint}", err=True)
    problems = settings.problems(ALL_NEEDS)
    if problems:
        click.echo("\nThe web app and the scheduler cannot start yet:", err=True)
        for problem in problems:
            click.echo("  - " + problem.replace("\n", "\n    "), err=True)
        click.get_current_context().exit(1)


@main.command("preview")
@click.argument("day", type=int)
@click.option("--part", type=click.Choice(["both", "text", "html"]), default="both")
def preview_command(day: int, part: str) -> None:
    """Print lesson DAY as a sample reader would get it, without sending."""
    from course.render import sample_reader

    renderer, lessons = _content()
    _require_lesson(lessons, day)
    reader = sample_reader(renderer.settings)
    compiled = renderer.compiled("lesson", day, lessons, reader.country)
    values = renderer.slot_values(compiled.slots, reader, "lesson", day)
    html, text = compiled.fill(values)
    click.echo(f"Subject: {compiled.subject}\n")
    if part in ("both", "text"):
        click.echo(text)
    if part in ("both", "html"):
        click.echo(html)


def _require_lesson(lessons: LessonSet, day: int) -> None:
    if lessons.get(day) is None:
        reason = next((f"{name}: {why}" for name, why in lessons.errors.items()), "no such lesson")
        raise click.ClickException(f"Lesson {day} cannot be rendered ({reason}).")


@main.command("send-test")
@click.argument("day", type=int)
@click.option("--to", "to", required=True, help="Where to send the test message.")
def send_test_command(day: int, to: str) -> None:
    """Send lesson DAY to ADDRESS now, through the configured transport."""
    from email_validator import EmailNotValidError, validate_email

    from course.mail import DeliveryError
    from course.testsend import send_test

    try:
        address = validate_email(to, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    settings = _settings(Need.MAIL, Need.SECRET, Need.PUBLIC)
    renderer, lessons = _content()
    _require_lesson(lessons, day)
    try:
        send_test(settings, renderer, lessons, day, address, utcnow())
    except DeliveryError as exc:
        raise click.ClickException(f"Sending failed: {exc}") from None
    click.echo(f"Sent lesson {day} to {address}.")


# -- operator commands ----------------------------------------------------------------------


@main.group("admin")
def admin_group() -> None:
    """Operator accounts for the admin pages."""


def _check_timezone(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from course.subscriptions import known_timezones

    if value not in known_timezones():
        raise click.BadParameter(f"{value!r} is not an IANA time zone name such as Europe/Berlin")
    return value


_ROLES = ("owner", "therapist", "assistant")


@admin_group.command("create")
@click.argument("email")
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    callback=_check_timezone,
    help="IANA time zone the admin pages show times in, e.g. Europe/Berlin.",
)
@click.option(
    "--role",
    type=click.Choice(_ROLES),
    help="What they may do: owner (everything, staff accounts included), therapist (also "
    'readers\' notes and replies, and "Needs a look"), assistant (subscribers and lessons, '
    "never notes). Default: owner for the first account; required for every later one.",
)
def admin_create(email: str, timezone: str, role: str | None) -> None:
    """Create an operator account for EMAIL (asks for the password)."""
    from email_validator import EmailNotValidError, validate_email

    from course.operators import OperatorError, create_operator, default_role, find_operator

    # Check the address, and that the account can be made, before asking for a password twice.
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    with _state(Need.DATABASE).read_sessions() as session:
        if find_operator(session, email) is not None:
            raise click.ClickException(
                f"Cannot create the operator: an operator with the address {email} already exists."
            )
        if role is None and default_role(session) is None:
            raise click.UsageError(
                "Accounts exist already: name the new one's role with --role owner, "
                "--role therapist or --role assistant."
            )
    # Only ever from the prompt: an argument would land in the shell history and `ps`.
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with _state(Need.DATABASE).sessions() as session, session.begin():
            operator = create_operator(session, email, password, timezone, role=role)
            created, given = operator.email, operator.role
    except OperatorError as exc:
        raise click.ClickException(f"Cannot create the operator: {exc}.") from None
    click.echo(f"Created operator {created}. Role: {given}.")


@admin_group.command("list")
def admin_list() -> None:
    """List operator accounts: role, two-factor sign-in, last sign-in (UTC)."""
    from course.operators import role_of, staff

    with _state(Need.DATABASE).read_sessions() as session:
        rows = [
            (
                o.email,
                role_of(o).value,
                "on" if o.totp_enabled_at else "off",
                o.last_login_at.strftime("%Y-%m-%d %H:%M") if o.last_login_at else "never",
            )
            for o in staff(session)
        ]
    if not rows:
        click.echo("No operator accounts yet: `course admin create EMAIL`.")
        return
    for line in _table(["Email", "Role", "Two-factor", "Last sign-in"], rows, left=3):
        click.echo(line)


@admin_group.command("reset-2fa")
@click.argument("email")
def admin_reset_2fa(email: str) -> None:
    """Turn off EMAIL's two-factor sign-in (a lost phone and lost recovery codes) and end
    their sessions. For when no owner can do it in the admin; recorded in the audit log."""
    from course import audit
    from course.operators import find_operator, reset_totp

    with _state(Need.DATABASE).sessions() as session, session.begin():
        operator = find_operator(session, email)
        if operator is None:
            raise click.ClickException(f"No operator has the address {email}.")
        reset_totp(session, operator.id)
        # Recorded as done by the account itself: the server's command line has no operator.
        audit.record(
            session,
            operator.id,
            audit.Action.STAFF_RESET_2FA,
            None,
            utcnow(),
            detail=f"staff #{operator.id}, from the command line",
        )
        name = operator.email
    click.echo(f"Two-factor sign-in of {name} is off; they set it up again at their next sign-in.")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> list[str]:
    """Lines of an aligned table: the first ``left`` columns left-aligned, the rest right."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(cells[0]), rule, *(line(row) for row in cells[1:])]


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@main.command("stats")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First signup day (UTC).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Last signup day (UTC).")
@click.option("--source", help="Only readers who signed up with this source tag.")
def stats_command(start: datetime | None, end: datetime | None, source: str | None) -> None:
    """Print the funnel, the per-lesson results and the sending health."""
    from datetime import timedelta

    from course.reports import Filters, alarms, funnel, health, per_lesson

    if start and end and start > end:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    filters = Filters(
        start=start.date() if start else None, end=end.date() if end else None, source=source
    )
    course = _state(Need.DATABASE)
    settings = course.settings
    lessons = course.lessons.current()
    titles = {day: lesson.title for day, lesson in lessons.lessons.items()}
    now = utcnow()
    with course.read_sessions() as session, session.begin():
        steps = funnel(session, filters, lessons.total)
        results = per_lesson(session, filters, titles, lessons.total)
        pulse = health(session, now, settings.tick_seconds)
        found = alarms(
            session,
            now,
            settings.tick_seconds,
            timedelta(minutes=settings.health_max_delay_minutes),
        )

    scope = []
    if filters.start:
        scope.append(f"signed up from {filters.start}")
    if filters.end:
        scope.append(f"signed up until {filters.end}")
    if source:
        scope.append(f"source {source}")
    click.echo(f"Readers: {', '.join(scope) if scope else 'all'}")
    click.echo()
    signed_up = steps[0].count if steps else 0

    def share(count: int) -> str:
        return f"{100 * count / signed_up:.1f}%" if signed_up else "-"

    click.echo("Funnel")
    for text in _table(
        ["Step", "Readers", "% of signed up"], [(s.label, s.count, share(s.count)) for s in steps]
    ):
        click.echo(text)
    click.echo()
    click.echo("Per lesson")
    rows = [
        (
            r.lesson,
            _shorten(r.title),
            r.delivered,
            r.viewed,
            r.done,
            r.checkins.get("lighter", 0),
            r.checkins.get("same", 0),
            r.checkins.get("stirred", 0),
            r.booking_clicks,
            r.unsubscribes,
        )
        for r in results
    ]
    headers = [
        "Lesson",
        "Title",
        "Delivered",
        "Viewed",
        "Done",
        "Lighter",
        "Same",
        "Stirred",
        "Booking clicks",
        "Unsubscribes",
    ]
    for text in _table(headers, rows, left=2):
        click.echo(text)
    click.echo()
    click.echo("Sending (all readers)")
    last = pulse.last_tick.isoformat(timespec="seconds") if pulse.last_tick else "never"
    click.echo(
        f"Due now: {pulse.due_now}  In flight: {pulse.in_flight}  Sent in 24 h: {pulse.sent_24h}"
    )
    click.echo(f"Failed: {found.failed_total} in all, {found.failed_24h} in the last 24 h")
    if pulse.stalled:
        click.echo(
            f"WARNING {pulse.stalled} reader(s) wait for a lesson that could not be sent; "
            "retry from the dashboard once the cause is fixed"
        )
    click.echo(f"Last scheduler tick: {last}")
    for failure in pulse.failed[:10]:
        what = "confirmation" if failure["kind"] == "confirm" else f"lesson {failure['number']}"
        click.echo(f"  failed {what}: {_shorten(str(failure['error'] or ''), 90)}")
    for reason in found.reasons(settings.health_max_failed):
        click.echo(f"WARNING {reason}")


@main.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write subscribers to FILE and events to FILE-events (e.g. export-events.csv).",
)
def export_command(out: Path | None) -> None:
    """Export subscribers and events as CSV (to stdout without --out)."""
    from course.exporter import events_path, open_private, write_events, write_subscribers

    with _state(Need.DATABASE).read_sessions() as session, session.begin():
        if out is None:
            stream = sys.stdout
            write_subscribers(session, stream)
            stream.write("\r\n")  # a blank line between the two tables
            write_events(session, stream)
            stream.flush()
            return
        events_out = events_path(out)
        try:
            with open_private(out) as handle:
                subscribers = write_subscribers(session, handle)
            with open_private(events_out) as handle:
                events = write_events(session, handle)
        except OSError as exc:
            raise click.ClickException(f"Cannot write the export: {exc}") from None
    click.echo(f"Wrote {subscribers} subscribers to {out} and {events} events to {events_out}.")


#: How many skipped rows the import summary lists; --report has all of them.
MAX_LISTED = 50


def _import_summary(result: ImportResult, report: Path | None) -> None:
    from course.exporter import open_private, write_rows

    click.echo(f"Imported {result.imported}, skipped {len(result.skipped)}.")
    # The reason only, not the address: terminal output ends up in logs and scrollback.
    for skipped in result.skipped[:MAX_LISTED]:
        click.echo(f"line {skipped.line}: {skipped.reason}")
    more = len(result.skipped) - MAX_LISTED
    if more > 0:
        hint = "" if report else " (use --report FILE to list them all)"
        click.echo(f"... and {more} more{hint}.")
    if report is not None:
        try:
            with open_private(report) as handle:
                write_rows(
                    handle,
                    ["line", "email", "reason"],
                    ((s.line, s.email, s.reason) for s in result.skipped),
                )
        except OSError as exc:
            raise click.ClickException(f"Cannot write the report: {exc}") from None
        click.echo(f"Skipped rows written to {report}.")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--consented",
    is_flag=True,
    help="These people already agreed to receive this course: start it without asking "
    "them to confirm.",
)
@click.option("--source", help="Source tag for rows that have none of their own.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every skipped row, with the reason, to this CSV file.",
)
def import_command(file: Path, consented: bool, source: str | None, report: Path | None) -> None:
    """Import readers from a CSV file.

    The file needs a header row with an 'email' column; 'name', 'timezone',
    'send_hour' and 'source' are used when present; other columns are ignored.
    """
    from course.importer import (
        ImportAborted,
        ImportFileError,
        count_rows,
        import_rows,
        read_rows,
        validate_source,
    )
    from course.subscriptions import ValidationFailed

    if source is not None:
        try:
            source = validate_source(source)
        except ValidationFailed as exc:
            raise click.BadParameter(
                exc.errors.get("source", str(exc)), param_hint="--source"
            ) from None
    # The first pass reads the whole file, so a file broken anywhere imports nothing.
    try:
        total = count_rows(file)
    except ImportFileError as exc:
        raise click.ClickException(f"{file.name}: {exc}. Nothing was imported.") from None
    try:
        with click.progressbar(
            read_rows(file),
            length=total,
            label=f"Importing {total} rows",
            file=sys.stderr,
        ) as rows:
            result = import_rows(
                _state(Need.DATABASE).sessions,
                rows,
                _state(Need.DATABASE).settings,
                utcnow,
                consented=consented,
                source=source,
            )
    except ImportAborted as exc:
        _import_summary(exc.result, report)
        cause = exc.__cause__
        why = (str(cause).splitlines() or [""])[0] if cause else ""
        why = f"{type(cause).__name__}: {why}" if cause else "unknown error"
        raise click.ClickException(
            f"The import stopped at line {exc.line} ({why}). "
            f"The {exc.result.imported} rows imported before it are kept."
        ) from None
    _import_summary(result, report)


@main.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget_command(email: str, yes: bool) -> None:
    """Erase everything stored about the reader with address EMAIL."""
    from email_validator import EmailNotValidError, validate_email

    from course.privacy import erase
    from course.subscriptions import by_public_id, find_by_email

    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        email = email.strip()  # not a valid address now; still look it up as given
    sessions = _state(Need.DATABASE).sessions
    with sessions() as session, session.begin():
        subscriber = find_by_email(session, email)
        public_id = subscriber.public_id if subscriber else None
    if public_id is None:
        raise click.ClickException("No subscriber with that address.")
    # Ask outside any transaction: a database lock must not wait for a person to answer.
    if not yes:
        click.confirm(
            "Erase this reader and everything stored about them? This cannot be undone.",
            abort=True,
        )
    with sessions() as session, session.begin():
        subscriber = by_public_id(session, public_id)
        if subscriber is None:
            raise click.ClickException("No subscriber with that address.")
        erase(session, subscriber, _state(Need.DATABASE).settings.secret_keys, utcnow())
    click.echo("Erased.")


@main.group("bounces")
def bounces_group() -> None:
    """Bounces, complaints and replies that arrive after sending."""


@bounces_group.command("check")
def bounces_check() -> None:
    """Read COURSE_BOUNCE_MAILBOX_URL and COURSE_REPLIES_MAILBOX_URL now, once."""
    from course.mailroom import check_all, mailboxes

    course = _state(Need.DATABASE, Need.SECRET)
    if not mailboxes(course.settings):
        raise click.ClickException(
            "No mailbox is configured: set COURSE_BOUNCE_MAILBOX_URL (and, to collect "
            "replies, COURSE_REPLIES_MAILBOX_URL)."
        )
    failed = False
    for source, outcome in check_all(course.sessions, course.settings, utcnow).items():
        if isinstance(outcome, str):
            click.echo(f"{source}: cannot be read: {outcome}", err=True)
            failed = True
            continue
        counts = ", ".join(f"{n} {what}" for what, n in sorted(outcome.items()))
        click.echo(f"{source}: {counts or 'no messages'}")
    if failed:
        click.get_current_context().exit(1)


@main.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys."""


@dkim_group.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--selector", help="The DKIM selector (default: COURSE_DKIM_SELECTOR).")
@click.option("--domain", help="The signing domain (default: the From address's domain).")
def dkim_keygen(key_file: Path, selector: str | None, domain: str | None) -> None:
    """Write a new private key to KEY_FILE and print the DNS record to publish."""
    from email.utils import parseaddr

    from course.dkim import dns_record, generate_key

    settings = _settings()
    selector = selector or settings.dkim_selector
    from_domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    domain = domain or settings.dkim_domain or from_domain
    if not domain:
        raise click.BadParameter("give --domain, or set COURSE_MAIL_FROM", param_hint="--domain")
    if key_file.exists():
        raise click.ClickException(f"{key_file} exists: a key is never overwritten.")
    pem = generate_key()
    try:
        with key_file.open("xb") as handle:
            key_file.chmod(0o600)
            handle.write(pem)
    except OSError as exc:
        raise click.ClickException(f"Cannot write {key_file}: {exc.strerror}") from None
    name, value = dns_record(selector, domain, pem)
    click.echo(f"Wrote the private key to {key_file} (readable by its owner only).")
    click.echo("Publish this TXT record in your DNS:")
    click.echo(f'  {name}  TXT  "{value}"')
    click.echo(
        f"Then set COURSE_DKIM_KEY_FILE={key_file} and COURSE_DKIM_SELECTOR={selector}"
        + ("" if domain == from_domain else f" and COURSE_DKIM_DOMAIN={domain}")
        + ", and check with `course doctor`."
    )


@main.group("keys")
def keys_group() -> None:
    """The data keys that encrypt readers' notes and replies (COURSE_DATA_KEYS)."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new data key (put it first in COURSE_DATA_KEYS)."""
    from course.crypto import generate_key

    click.echo(generate_key())


@keys_group.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every note, reply and staff TOTP secret with the first key of
    COURSE_DATA_KEYS.

    Put the new key first and keep the old ones after it; after this has run, the old
    keys can be removed.
    """
    from course.keys import rotate_data

    course = _state(Need.DATABASE, Need.SECRET)
    if not course.settings.data_keys:
        raise ConfigProblem("COURSE_DATA_KEYS is not set: nothing to encrypt with.")
    with course.sessions() as session, session.begin():
        counts = rotate_data(session)
    for column, count in counts.items():
        click.echo(f"{column}: {count} re-encrypted")
    click.echo("Done. Keys after the first one in COURSE_DATA_KEYS can now be removed.")


@main.group("lessons")
def lessons_group() -> None:
    """The lesson files."""


@lessons_group.command("check")
def lessons_check() -> None:
    """Check the templates and render every lesson; report problems (exit code 1 if any)."""
    from course.checks import check_content, crisis_warnings

    renderer, lessons = _content()
    click.echo(f"Lessons from {lessons.directory}")
    report = check_content(renderer, lessons, utcnow())
    for line in report.ok:
        click.echo(f"OK {line}")
    for problem in report.problems:
        click.echo(f"BROKEN {problem}")
    for warning in crisis_warnings(renderer, utcnow().date()):
        click.echo(f"WARNING {warning}")
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) found.", err=True)
        click.get_current_context().exit(1)


main.add_command(doctor_command)  # defined in its own module, course/doctor_cli.py


if __name__ == "__main__":  # pragma: no cover
    main()
