"""The ``course`` command: run the app, the senders, migrations and operator tasks.

Every command and its ``--help`` work with no configuration at all. A command reads the
configuration only when it runs, and asks only for what it needs (``course db upgrade``
needs a database; ``course scheduler`` needs a database, a mail transport, a secret key and
the public addresses). A missing setting stops it with a message naming the setting.

Tests pass a ready :class:`~course.runtime.CourseState` as the click context's ``obj``;
otherwise one is built from the environment on first use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from course.logs import configure_logging
from course.models import utcnow

if TYPE_CHECKING:
    from course.courses import PublishedCourse
    from course.importer import ImportResult
    from course.render import Renderer
    from course.runtime import CourseState


class ConfigProblem(click.ClickException):
    """The configuration does not allow this command (exit code 2)."""

    exit_code = 2

    def format_message(self) -> str:
        return "Configuration error:\n  " + self.message.replace("\n", "\n  ")


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


def _content(
    directory: Path | None = None, slug: str | None = None
) -> tuple[Renderer, PublishedCourse, dict[str, str]]:
    """A renderer and a course, for commands that only render: a course folder (no
    database, no key needed; by default COURSE_LESSONS_DIR or the shipped course), or with
    ``slug`` the published version of a course in the database. Also the files of the
    folder that could not be read.

    Without a secret key (a fresh server), links are signed with a throw-away key: the
    output shows what readers get, but its links do not work.
    """
    from course.courses import folder_view
    from course.render import Renderer
    from course.resources import lessons_dir
    from course.tokens import Signer

    obj = _root().obj
    settings = obj.settings if obj is not None else _settings()
    if not settings.secret_keys:
        import secrets

        settings = settings.model_copy(update={"secret_key": SecretStr(secrets.token_hex(32))})
    renderer = Renderer(settings, Signer(settings.secret_keys))
    if slug is not None:
        found = _state(Need.DATABASE).courses.current().by_slug(slug)
        if found is None:
            raise click.ClickException(f"There is no course '{slug}'.")
        return renderer, found, {}
    course, errors = folder_view(directory or lessons_dir(settings))
    return renderer, course, errors


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
@click.option(
    "--processes",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Sender processes to run, sharing the work (one per core is a good start).",
)
def scheduler_command(processes: int) -> None:
    """Tick the sending engine until stopped (run one or more of these in production)."""
    from course.scheduler import run_forever, run_processes

    settings = _settings(*ALL_NEEDS)
    if processes == 1:
        run_forever(settings)
    else:
        run_processes(settings, processes)


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

    settings = _settings(Need.DATABASE)
    upgrade(settings.database_url, revision, first_course=settings.lessons_dir)
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


_COURSE_OPTIONS = (
    click.option("--course", "slug", help="A course in the database (its slug)."),
    click.option(
        "--dir",
        "directory",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="A course folder (default: COURSE_LESSONS_DIR or the shipped course).",
    ),
)


def _course_options(func: Any) -> Any:
    for option in reversed(_COURSE_OPTIONS):
        func = option(func)
    return func


@main.command("preview")
@click.argument("position", type=int)
@click.option("--part", type=click.Choice(["both", "text", "html"]), default="both")
@_course_options
def preview_command(position: int, part: str, slug: str | None, directory: Path | None) -> None:
    """Print lesson POSITION (1 for the first) as a sample reader would get it, without
    sending."""
    from course.render import sample_reader

    renderer, course, _errors = _content(directory, slug)
    key = _require_lesson(course, position)
    reader = sample_reader(renderer.settings)
    compiled = renderer.compiled("lesson", key, course, reader.country)
    values = renderer.slot_values(compiled.slots, reader, "lesson", key, compiled.language)
    html, text = compiled.fill(values)
    click.echo(f"Subject: {compiled.subject}\n")
    if part in ("both", "text"):
        click.echo(text)
    if part in ("both", "html"):
        click.echo(html)


def _require_lesson(course: PublishedCourse, position: int) -> int:
    """The key of the lesson at ``position``, or a clear error."""
    order = course.content.order
    if not 1 <= position <= len(order):
        raise click.ClickException(f"The course has {len(order)} lessons; there is no {position}.")
    key = order[position - 1]
    if course.content.get(key) is None:
        errors = course.content.errors
        reason = next((f"{name}: {why}" for name, why in errors.items()), "no such lesson")
        raise click.ClickException(f"Lesson {position} cannot be rendered ({reason}).")
    return key


@main.command("send-test")
@click.argument("position", type=int)
@click.option("--to", "to", required=True, help="Where to send the test message.")
@_course_options
def send_test_command(position: int, to: str, slug: str | None, directory: Path | None) -> None:
    """Send lesson POSITION (1 for the first) to ADDRESS now, through the configured
    transport."""
    from email_validator import EmailNotValidError, validate_email

    from course.mail import DeliveryError
    from course.testsend import send_test

    try:
        address = validate_email(to, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    settings = _settings(Need.MAIL, Need.SECRET, Need.PUBLIC)
    renderer, course, _errors = _content(directory, slug)
    key = _require_lesson(course, position)
    try:
        send_test(settings, renderer, course, key, address, utcnow())
    except DeliveryError as exc:
        raise click.ClickException(f"Sending failed: {exc}") from None
    click.echo(f"Sent lesson {position} to {address}.")


# -- operator commands ----------------------------------------------------------------------


@main.group("admin")
def admin_group() -> None:
    """Operator accounts for the admin pages."""


def _check_timezone(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from course.timezones import known_timezones

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
@click.option(
    "--course", "slug", help="Only this course (its slug); default: all courses, then each."
)
def stats_command(
    start: datetime | None, end: datetime | None, source: str | None, slug: str | None
) -> None:
    """Print all courses side by side, each course's funnel and per-lesson results, and
    the sending health."""
    import dataclasses
    from datetime import timedelta

    from course.reports import (
        BookingCounts,
        Filters,
        alarms,
        bookings_by_lesson,
        course_lessons,
        funnel,
        health,
        per_lesson,
        summary,
    )

    if start and end and start > end:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    state = _state(Need.DATABASE)
    settings = state.settings
    catalogue = state.courses.current()
    courses = [c for c in catalogue if c.version_id is not None]
    if slug is not None:
        courses = [c for c in courses if c.slug == slug]
        if not courses:
            raise click.BadParameter(
                f"there is no published course '{slug}'", param_hint="--course"
            )
    now = utcnow()
    reports = []
    booked: dict[int, list[BookingCounts]] = {}
    readers = Filters(
        start=start.date() if start else None, end=end.date() if end else None, source=source
    )
    with state.read_sessions() as session, session.begin():
        across = None if slug is not None else summary(session, readers, catalogue)
        for course in courses:
            filters = dataclasses.replace(readers, course_id=course.id)
            lessons = course_lessons(course)
            reports.append(
                (
                    course,
                    funnel(session, filters, lessons),
                    per_lesson(session, filters, lessons),
                )
            )
            booked[course.id] = bookings_by_lesson(session, filters)
        pulse = health(session, now, settings.tick_seconds)
        found = alarms(
            session,
            now,
            settings.tick_seconds,
            timedelta(minutes=settings.health_max_delay_minutes),
        )

    scope = []
    if start:
        scope.append(f"signed up from {start.date()}")
    if end:
        scope.append(f"signed up until {end.date()}")
    if source:
        scope.append(f"source {source}")
    click.echo(f"Readers: {', '.join(scope) if scope else 'all'}")
    if across is not None:
        click.echo()
        _print_summary(across)
    # The bookings line, where a booking system reports bookings (or did).
    hooked = bool(
        settings.calcom_webhook_secret
        or settings.calendly_signing_key
        or settings.booking_webhook_secret
    )
    for course, steps, results in reports:
        click.echo()
        click.echo(f"Course: {course.title} ({course.slug})")
        click.echo()
        _print_course_stats(steps, results)
        if hooked or any(r.confirmed_total for r in booked[course.id]):
            _print_bookings(booked[course.id])
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


def _print_summary(across: Any) -> None:
    """The all-courses table: one row per course and the totals."""
    click.echo("All courses")
    rows = [
        (
            _shorten(f"{c.title} ({c.slug})" if c.slug else c.title, 50),
            c.status,
            *(getattr(c, name) for name in c.COUNTS),
        )
        for c in [*across.courses, across.total]
    ]
    headers = [
        "Course",
        "Status",
        "Signed up",
        "Confirmed",
        "Active",
        "Completed",
        "Unsubscribed",
        "Booked",
        "Booking clicks",
    ]
    for text in _table(headers, rows, left=2):
        click.echo(text)
    click.echo(
        f"{across.total.signed_up} enrolment(s) by {across.people} different "
        f"{'person' if across.people == 1 else 'people'}."
    )


def _print_bookings(rows: Sequence[Any]) -> None:
    """One line: confirmed bookings (net of cancellations) by source, and how many of them
    no lesson's "Book a session" click led to (course.reports.bookings_by_lesson)."""
    sources: dict[str, int] = {}
    for row in rows:
        for source, count in row.confirmed.items():
            sources[source] = sources.get(source, 0) + count
    unattributed = sum(r.confirmed_total for r in rows if r.lesson is None)
    shown = ", ".join(f"{source} {count}" for source, count in sources.items() if count)
    click.echo()
    click.echo(
        f"Confirmed bookings: {sum(sources.values())}"
        + (f" ({shown})" if shown else "")
        + (f", {unattributed} not attributed to a lesson" if unattributed else "")
    )


def _print_course_stats(steps: Sequence[Any], results: Sequence[Any]) -> None:
    """One course's funnel and per-lesson table (lessons no longer in the course, and the
    emails after it, at the end)."""
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
            r.position or "-",
            _shorten(r.title if r.position or r.after_course else f"(removed) {r.title}"),
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


@main.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write subscribers to FILE and events to FILE-events (e.g. export-events.csv).",
)
@click.option("--course", "slug", help="Only this course (its slug); default: every course.")
def export_command(out: Path | None, slug: str | None) -> None:
    """Export subscribers and events as CSV (to stdout without --out).

    Every row has a 'course' column (the course's slug); a subscriber row is one person on
    one course."""
    from course.exporter import events_path, open_private, write_events, write_subscribers

    state = _state(Need.DATABASE)
    course_id = None
    if slug is not None:
        found = state.courses.current().by_slug(slug)
        if found is None:
            raise click.BadParameter(f"there is no course '{slug}'", param_hint="--course")
        course_id = found.id
    with state.read_sessions() as session, session.begin():
        if out is None:
            stream = sys.stdout
            write_subscribers(session, stream, course_id)
            stream.write("\r\n")  # a blank line between the two tables
            write_events(session, stream, course_id)
            stream.flush()
            return
        events_out = events_path(out)
        try:
            with open_private(out) as handle:
                subscribers = write_subscribers(session, handle, course_id)
            with open_private(events_out) as handle:
                events = write_events(session, handle, course_id)
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
@click.option("--course", "slug", help="The course they join (its slug); default: the first.")
def import_command(
    file: Path, consented: bool, source: str | None, report: Path | None, slug: str | None
) -> None:
    """Import readers from a CSV file into a course.

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
    state = _state(Need.DATABASE)
    catalogue = state.courses.current()
    course = catalogue.by_slug(slug) if slug else catalogue.default()
    if course is None or not course.open_for_signup:
        raise click.BadParameter(
            f"there is no published course '{slug}'" if slug else "no course is published yet",
            param_hint="--course",
        )
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
                state.sessions,
                rows,
                state.settings,
                utcnow,
                course=course,
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
    """Erase everything stored about the reader with address EMAIL, on every course."""
    from email_validator import EmailNotValidError, validate_email

    from course.privacy import erase
    from course.subscriptions import by_public_id, find_person

    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        email = email.strip()  # not a valid address now; still look it up as given
    sessions = _state(Need.DATABASE).sessions
    with sessions() as session, session.begin():
        subscriber = find_person(session, email)
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


# -- courses --------------------------------------------------------------------------------

if TYPE_CHECKING:
    from typing import NoReturn

    from sqlalchemy.orm import Session

    from course.content import CourseContent
    from course.coursefiles import CourseFolder, CourseMeta
    from course.lessons import LessonFields
    from course.models import Course


@main.group("courses")
def courses_group() -> None:
    """Courses, and course folders (course.yaml and one Markdown file per lesson) for
    keeping a course in git; see docs/courses.md."""


@courses_group.command("list")
def courses_list() -> None:
    """List every course: its status, published version, lessons and readers (on the
    course now / all who confirmed)."""
    from sqlalchemy import case, func, select

    from course.models import Course, Subscriber, SubscriberStatus

    state = _state(Need.DATABASE)
    with state.read_sessions() as session:
        catalogue = state.courses.current(session)
        readers = {
            course_id: (int(active or 0), int(total))
            for course_id, active, total in session.execute(
                select(
                    Subscriber.course_id,
                    func.sum(case((Subscriber.status == SubscriberStatus.ACTIVE, 1), else_=0)),
                    func.count(),
                )
                # A pending signup has not confirmed: not a reader yet.
                .where(Subscriber.status != SubscriberStatus.PENDING)
                .group_by(Subscriber.course_id)
            )
        }
        drafts = set(session.scalars(select(Course.id).where(Course.draft.is_not(None))))
    rows = [
        (
            course.slug,
            _shorten(course.title),
            course.status,
            f"v{course.version_number}" if course.version_number else "-",
            "open" if course.id in drafts else "-",
            course.content.total,
            "{}/{}".format(*readers.get(course.id, (0, 0))),
        )
        for course in catalogue
    ]
    if not rows:
        click.echo("No courses yet.")
        return
    headers = ["Slug", "Title", "Status", "Published", "Draft", "Lessons", "Readers"]
    for line in _table(headers, rows, left=5):
        click.echo(line)
    click.echo("Readers: receiving lessons now / everyone who confirmed.")


def _check_export_folder(directory: Path, force: bool) -> None:
    """Refuse to write a course into a folder that holds something else (its Markdown files
    would be replaced). A new or empty folder, or a course folder, is fine; hidden entries
    such as ``.git`` do not count."""
    from course.coursefiles import COURSE_FILE

    if force or not directory.exists() or (directory / COURSE_FILE).is_file():
        return
    others = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    if others:
        listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise click.ClickException(
            f"{directory} is not a course folder (it has no {COURSE_FILE}) and is not empty "
            f"({listed}). Choose a new or empty folder, or use --force to write into it "
            "anyway (its .md files are replaced)."
        )


@courses_group.command("export")
@click.argument("slug")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--draft", is_flag=True, help="Write the open draft instead of the published version."
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a folder that is not a course folder (its .md files are replaced).",
)
def courses_export(slug: str, directory: Path, draft: bool, force: bool) -> None:
    """Write the course SLUG into the folder DIRECTORY: course.yaml and one Markdown file
    per lesson, as `course courses import` reads them.

    Writing into a course folder replaces its course.yaml and .md files (a README.md
    stays), so lessons removed from the course disappear from the folder too.
    """
    from pydantic import ValidationError
    from sqlalchemy import select

    from course.content import CourseContent
    from course.coursefiles import CourseMeta, write_course_folder
    from course.courses import published_content
    from course.models import Course, CourseVersion

    _check_export_folder(directory, force)
    with _state(Need.DATABASE).read_sessions() as session:
        course = session.scalar(select(Course).where(Course.slug == slug))
        if course is None:
            raise click.ClickException(f"There is no course '{slug}'.")
        if draft:
            if not course.draft:
                raise click.ClickException(f"The course '{slug}' has no open draft.")
            content = CourseContent.from_json(course.draft)
            what = "the draft"
        else:
            if course.published_version_id is None:
                raise click.ClickException(
                    f"The course '{slug}' has not been published yet; export its draft with "
                    "--draft."
                )
            content = published_content(session, course)
            number = session.scalar(
                select(CourseVersion.number).where(CourseVersion.id == course.published_version_id)
            )
            what = f"version {number}"
        try:
            meta = CourseMeta(
                slug=course.slug,
                title=course.title,
                description=course.description,
                language=course.language,
                weekdays_only=course.weekdays_only,
                send_hour=course.send_hour,
                booking_url=course.booking_url,
            )
        except ValidationError as exc:
            reasons = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise click.ClickException(
                f"The course's settings cannot be written to course.yaml ({reasons})."
            ) from None
    try:
        written = write_course_folder(meta, content, directory)
    except OSError as exc:
        raise click.ClickException(f"Cannot write to {directory}: {exc.strerror or exc}") from None
    click.echo(f"Wrote {what} of '{slug}' ({len(content.lessons)} lessons) to {directory}:")
    for path in written:
        click.echo(f"  {path.name}")


#: How the import names a lesson's fields.
_FIELD_NAMES = {"delay_days": "delay", "body": "text"}
#: The settings a course.yaml can change.
_COURSE_SETTINGS = ("title", "description", "language", "weekdays_only", "send_hour", "booking_url")


def _content_changes(old: CourseContent, new: CourseContent, files: Sequence[str]) -> list[str]:
    """What publishing ``new`` changes against ``old``, one line each, lessons by key."""
    from course.editor import moved_keys

    lines = []
    old_by_key = {lesson.key: (n, lesson) for n, lesson in enumerate(old.lessons, start=1)}
    new_keys = {lesson.key for lesson in new.lessons}
    moved = moved_keys([lesson.key for lesson in old.lessons], [ls.key for ls in new.lessons])
    for n, (lesson, file_name) in enumerate(zip(new.lessons, files, strict=True), start=1):
        was = old_by_key.get(lesson.key)
        name = f'lesson {n} "{_shorten(lesson.title)}"'
        if was is None:
            lines.append(f"added    {name} (key {lesson.key}, {file_name})")
            continue
        old_n, before = was
        fields = [
            _FIELD_NAMES.get(field, field)
            for field in type(lesson).model_fields
            if getattr(lesson, field) != getattr(before, field)
        ]
        if fields:
            lines.append(f"changed  {name} (key {lesson.key}): {', '.join(fields)}")
        if lesson.key in moved:
            lines.append(f"moved    {name} (key {lesson.key}, was lesson {old_n})")
    for old_n, lesson in enumerate(old.lessons, start=1):
        if lesson.key not in new_keys:
            title = _shorten(lesson.title)
            lines.append(f'removed  "{title}" (key {lesson.key}, was lesson {old_n})')
    for attr, label in (("completion", "completion email"), ("followup", "follow-up email")):
        before, after = getattr(old, attr), getattr(new, attr)
        if before is None and after is not None:
            lines.append(f"added    {label}")
        elif before is not None and after is None:
            lines.append(f"removed  {label}")
        elif before != after:
            fields = [
                f for f in ("subject", "body", "days") if getattr(before, f) != getattr(after, f)
            ]
            lines.append(f"changed  {label}: {', '.join(_FIELD_NAMES.get(f, f) for f in fields)}")
    return lines


def _settings_changes(course: Course, meta: CourseMeta) -> list[str]:
    """The course settings a ``course.yaml`` changes (those it sets; see apply_meta)."""
    given = set(meta.model_fields_set) - {"slug", "title"} | ({"title"} if meta.title else set())
    names = [
        name
        for name in _COURSE_SETTINGS
        if name in given and getattr(meta, name) != getattr(course, name)
    ]
    return [f"changed  settings: {', '.join(names)}"] if names else []


def _reused_keys(
    session: Session, course: Course, content: CourseContent, files: Sequence[str]
) -> list[str]:
    """Lessons that take the key of a lesson removed earlier. Readers who received that
    lesson would never get the new one (a reader's next lesson is the first they have not
    received, by key), so this is refused; the same lesson coming back (same slug) is not."""
    from sqlalchemy import select

    from course.content import CourseContent
    from course.courses import published_content
    from course.models import CourseVersion

    current = {lesson.key for lesson in published_content(session, course).lessons}
    history: dict[int, LessonFields] = {}
    for text in session.scalars(
        select(CourseVersion.content)
        .where(CourseVersion.course_id == course.id)
        .order_by(CourseVersion.number)
    ):
        history.update((ls.key, ls) for ls in CourseContent.from_json(text).lessons)
    free = max([*history, *(lesson.key for lesson in content.lessons)], default=0) + 1
    problems = []
    for lesson, file_name in zip(content.lessons, files, strict=True):
        old = history.get(lesson.key)
        if lesson.key in current or old is None or old.slug == lesson.slug:
            continue
        problems.append(
            f'{file_name}: key {lesson.key} belonged to the removed lesson "{old.title}"; '
            "readers who received that one would never get this one. Give this lesson a "
            f"key of its own (key: {free}), or keep the slug '{old.slug}' if it is that "
            "lesson coming back."
        )
        free += 1
    return problems


def _folder_problems(directory: Path, folder: CourseFolder) -> list[str]:
    """Everything that keeps a course folder from being published, by file name: the
    files that cannot be read, then the checks of course.content (the editor's checks)."""
    from pydantic import ValidationError

    from course.content import after_course_problems, content_problems
    from course.coursefiles import (
        AFTER_COURSE_FILES,
        CourseFileError,
        lesson_files,
        read_lesson_file,
    )
    from course.lessons import lesson_problems

    problems = [f"{name}: {reason}" for name, reason in sorted(folder.errors.items())]
    for path in lesson_files(directory):
        if path.name in folder.errors:
            continue
        try:
            lesson = read_lesson_file(path, first=False)  # read a moment ago; now by name
        except (CourseFileError, ValidationError) as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        problems += [f"{path.name}: {problem}" for problem in lesson_problems(lesson)]
    for name, file_name in AFTER_COURSE_FILES.items():
        fields = getattr(folder.content, name)
        if fields is not None:
            problems += [f"{file_name}: {p}" for p in after_course_problems(name, fields)]
    # What no single file causes (no lessons at all, too many): the same checks as publish.
    return problems or content_problems(folder.content)


def _refuse(problems: Sequence[str]) -> NoReturn:
    for problem in problems:
        click.echo(f"BROKEN {problem}")
    raise click.ClickException(f"{len(problems)} problem(s) found. Nothing was imported.")


@courses_group.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--slug",
    help="The course to import into (default: 'slug:' in course.yaml); a new one is created.",
)
@click.option(
    "--publish",
    "open_signups",
    is_flag=True,
    help="Also open the course for signups if it is still a draft.",
)
@click.option(
    "--discard-draft",
    is_flag=True,
    help="Go ahead although the course has an unpublished draft in the admin (it is lost).",
)
@click.option("--dry-run", is_flag=True, help="Check and show the changes; change nothing.")
def courses_import(
    directory: Path, slug: str | None, open_signups: bool, discard_draft: bool, dry_run: bool
) -> None:
    """Publish the course folder DIRECTORY as the next version of its course (a new
    course if the slug is new), after showing what changes against the published version.

    Readers get each lesson as published when it is sent. A folder with any unreadable
    file or problem imports nothing (exit code 1). When nothing changed in the lessons or
    emails, no version is added (settings and --publish still apply).
    """
    from sqlalchemy import select

    from course.coursefiles import SLUG, CourseFileError, lesson_files, read_course_folder
    from course.courses import CourseProblem, apply_meta, import_folder, published_content
    from course.models import Course, CourseStatus, CourseVersion

    try:
        folder = read_course_folder(directory)
    except CourseFileError as exc:
        raise click.ClickException(f"{exc}. Nothing was imported.") from None
    problems = _folder_problems(directory, folder)
    slug = slug or folder.meta.slug
    if not slug:
        problems.append("name the course: 'slug:' in course.yaml, or --slug")
    elif not SLUG.fullmatch(slug) or len(slug) > 64:
        problems.append(
            f"'{slug}' cannot be a course's address name (slug): lower-case letters, digits "
            "and single hyphens, at most 64 characters"
        )
    if problems:
        _refuse(problems)
    assert slug is not None
    files = [path.name for path in lesson_files(directory)]
    content = folder.content
    state = _state(Need.DATABASE)
    with (state.read_sessions if dry_run else state.sessions)() as session, session.begin():
        course = session.scalar(select(Course).where(Course.slug == slug))
        number = None
        if course is not None and course.published_version_id is not None:
            number = session.scalar(
                select(CourseVersion.number).where(CourseVersion.id == course.published_version_id)
            )
        if number is None:
            after = ", ".join(
                name
                for name, present in (
                    ("a completion email", content.completion),
                    ("a follow-up email", content.followup),
                )
                if present is not None
            )
            kind = "A new course" if course is None else "The course (never published)"
            click.echo(
                f"{kind} '{slug}': {len(content.lessons)} lessons" + (f", {after}" if after else "")
            )
            changes: list[str] = []
        else:
            assert course is not None
            old = published_content(session, course)
            changes = _content_changes(old, content, files)
            settings = _settings_changes(course, folder.meta)
            click.echo(f"Changes against version {number} of '{slug}':")
            for line in changes + settings or ["none"]:
                click.echo(f"  {line}")
            if not changes and old == content:
                if dry_run:
                    click.echo("Dry run: nothing was changed.")
                    return
                apply_meta(course, folder.meta)
                if open_signups and course.status == CourseStatus.DRAFT:
                    course.status = CourseStatus.PUBLISHED
                click.echo(f"The lessons and emails are unchanged: still version {number}.")
                _published_note(course.slug, course.status)
                return
        if course is not None:
            reused = _reused_keys(session, course, content, files)
            if reused:
                _refuse(reused)
            if course.draft and not discard_draft:
                saved = course.draft_updated_at
                when = f" (last saved {saved:%Y-%m-%d %H:%M} UTC)" if saved else ""
                raise click.ClickException(
                    f"The course '{slug}' has an unpublished draft in the admin{when}. "
                    "Publishing this folder would throw it away: publish or discard it in "
                    "the admin first, or use --discard-draft. Nothing was imported."
                )
        if dry_run:
            click.echo("Dry run: nothing was changed.")
            return
        try:
            course, version = import_folder(
                session,
                directory,
                author="course courses import",
                now=utcnow(),
                slug=slug,
                publish_status=open_signups,
            )
        except (CourseProblem, CourseFileError) as exc:
            raise click.ClickException(f"{exc}. Nothing was imported.") from None
        click.echo(f"Published '{course.slug}' version {version.number}.")
        _published_note(course.slug, course.status)


def _published_note(slug: str, status: str) -> None:
    """Who can join the course now."""
    from course.models import CourseStatus

    if status == CourseStatus.PUBLISHED:
        click.echo(f"Open for signups at /c/{slug}.")
    elif status == CourseStatus.DRAFT:
        click.echo(
            "The course is a draft: nobody can sign up yet (publish it with --publish, or in "
            "the admin)."
        )
    else:
        click.echo("The course is archived: closed for signups; its readers get this version.")


@main.group("lessons")
def lessons_group() -> None:
    """The lesson files."""


@lessons_group.command("check")
@_course_options
def lessons_check(slug: str | None, directory: Path | None) -> None:
    """Check the templates and render every email of a course; report problems (exit code
    1 if any). Without options: the course folder of COURSE_LESSONS_DIR, or the shipped
    course (no database needed)."""
    from course.checks import check_course, check_templates, crisis_warnings
    from course.resources import lessons_dir

    renderer, course, errors = _content(directory, slug)
    where = f"the course '{slug}'" if slug else str(directory or lessons_dir(renderer.settings))
    click.echo(f"Lessons from {where}")
    report = check_course(renderer, course, utcnow())
    report.problems[:0] = [f"{name}: {reason}" for name, reason in sorted(errors.items())] + [
        # A broken template also breaks every email rendered with it: name it once.
        p
        for p in check_templates(renderer.env, "email")
        if p not in report.problems
    ]
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
