"""``course import``: bring an existing list of readers into the course.

The file is read twice: once to check that all of it is readable UTF-8 CSV with an
``email`` column (and to count the rows for the progress bar), then again to import. A file
that is broken anywhere is therefore refused before a single row is stored.

Every row goes through the same validation as the signup form. Nobody is enrolled twice:
an address that is already in the database (whatever its status, so a reader who
unsubscribed is never put back by an import), that is on the opt-out list (a reader who
unsubscribed or bounced and whose data was erased since), or that appeared earlier in the
file is skipped, with the reason.

Rows are committed in batches, so a large file does not become one huge transaction, and
each row runs in its own savepoint, so one failing row costs only that row.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from course.config import Settings
from course.courses import PublishedCourse
from course.crisis import country_for_timezone
from course.mailboxes import mailbox
from course.models import Subscriber, SubscriberStatus
from course.schedule import first_lesson_due, next_send, parse_hour
from course.subscriptions import (
    SignupData,
    ValidationFailed,
    find_by_email,
    is_suppressed,
    queue_lesson,
    rhythm_of,
    subscribe,
    validate_signup,
)

COLUMNS = ("email", "name", "timezone", "send_hour", "source")
BATCH_SIZE = 500
_DELIMITERS = (",", ";", "\t")

Clock = Callable[[], datetime]


class ImportFileError(ValueError):
    """The file cannot be imported at all (not UTF-8, not CSV, no ``email`` column)."""


class ImportAborted(RuntimeError):
    """An unexpected error stopped the import; rows before ``line`` were kept."""

    def __init__(self, line: int, result: ImportResult) -> None:
        super().__init__(f"the import stopped at line {line}")
        self.line = line
        self.result = result


@dataclass(frozen=True)
class Row:
    """One data row of the file: its line number and its cells by (lower-case) column."""

    line: int
    values: Mapping[str, str]


@dataclass(frozen=True)
class Skipped:
    """A row that was not imported, and why."""

    line: int
    email: str
    reason: str


@dataclass
class ImportResult:
    """What an import did."""

    imported: int = 0
    skipped: list[Skipped] = field(default_factory=list)


# -- reading the file ------------------------------------------------------------------------


def _delimiter(header_line: str) -> str:
    # Spreadsheets in many locales save "CSV" with semicolons; the header line tells which.
    return max(_DELIMITERS, key=lambda d: (header_line.count(d), d == ","))


def read_rows(path: Path) -> Iterator[Row]:
    """The data rows of a CSV file with a header row, or :class:`ImportFileError`.

    UTF-8 with or without a byte order mark; comma, semicolon or tab separated. Column
    names are matched without regard to case or surrounding spaces; unknown columns are
    ignored and blank lines are skipped.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
            handle.seek(0)
            reader = csv.reader(handle, delimiter=_delimiter(first))
            header = next(reader, None)
            if header is None:
                raise ImportFileError("the file is empty")
            names = [name.strip().lower() for name in header]
            if "email" not in names:
                found = ", ".join(repr(n) for n in names[:10] if n) or "none"
                raise ImportFileError(
                    f"the header row has no 'email' column (columns found: {found})"
                )
            # The first column of a name wins if a name appears twice.
            index = {name: names.index(name) for name in COLUMNS if name in names}
            previous_end = reader.line_num
            for cells in reader:
                line = previous_end + 1  # where the row starts (a quoted cell may span lines)
                previous_end = reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if any("\x00" in cell for cell in cells):
                    raise ImportFileError(f"line {line} contains NUL bytes; this is not CSV text")
                yield Row(line, {n: cells[i] for n, i in index.items() if i < len(cells)})
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"the file is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8'"
        ) from None
    except csv.Error as exc:
        raise ImportFileError(f"the file is not readable CSV: {exc}") from None
    except OSError as exc:
        raise ImportFileError(f"cannot read the file: {exc.strerror or exc}") from None


def count_rows(path: Path) -> int:
    """Read the whole file once: the number of data rows, or :class:`ImportFileError`."""
    return sum(1 for _ in read_rows(path))


# -- validating ------------------------------------------------------------------------------


def validate_source(tag: str) -> str:
    """A ``--source`` tag checked with the signup form's rules, or :class:`ValidationFailed`."""
    # The form's rules live in validate_signup; a placeholder address lets us reuse them.
    data = validate_signup(
        {"email": "import@example.org", "source": tag}, check_deliverability=False
    )
    if data.source is None:
        raise ValidationFailed({"source": "must not be empty"})
    return data.source


def _send_hour(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    hour = parse_hour(raw)
    if hour is None:
        raise ValidationFailed({"send_hour": "must be a whole number from 0 to 23"})
    return hour


def _validate(
    row: Row, settings: Settings, default_source: str | None
) -> tuple[SignupData, int | None]:
    values = dict(row.values)
    if not (values.get("source") or "").strip():
        values["source"] = default_source or ""
    errors: dict[str, str] = {}
    data: SignupData | None = None
    hour: int | None = None
    try:
        data = validate_signup(values, check_deliverability=settings.check_deliverability)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    try:
        hour = _send_hour(values.get("send_hour"))
    except ValidationFailed as exc:
        errors.update(exc.errors)
    if errors or data is None:
        raise ValidationFailed(errors)
    return data, hour


# -- importing -------------------------------------------------------------------------------


def _enrol(
    session: Session,
    data: SignupData,
    hour: int | None,
    consented: bool,
    settings: Settings,
    course: PublishedCourse,
    now: datetime,
) -> None:
    if not consented:
        # The normal double opt-in: a pending subscriber and a confirmation email, sent by
        # the scheduler like any signup's.
        subscriber = subscribe(
            session,
            data,
            now=now,
            default_timezone=settings.default_timezone,
            resend_after=timedelta(seconds=settings.confirm_resend_seconds),
        )
        subscriber.send_hour = hour
        return
    timezone = data.timezone or settings.default_timezone
    subscriber = Subscriber(
        course_id=course.id,
        email=data.email,
        mailbox=mailbox(data.email),
        name=data.name,
        timezone=timezone,
        country=country_for_timezone(timezone),
        send_hour=hour,
        source=data.source,
        status=SubscriberStatus.ACTIVE,
        created_at=now,
        confirmed_at=now,
        confirm_count=0,
        # The operator vouches for this reader's consent (`course import --consented`).
        consent_source="import",
    )
    session.add(subscriber)
    session.flush()
    first = course.content.next_for(set())
    if first is None:
        return
    lesson = course.content.get(first)
    rhythm = rhythm_of(subscriber, course, settings)
    # The first lesson at each reader's own next send hour, not on the next tick for
    # everyone: thousands of messages at once from one sender look like spam to receiving
    # mail servers (and hit relay rate limits), and a reader should get the first lesson in
    # the morning like everyone who signs up on the site, not at whatever hour the import
    # ran.
    due = first_lesson_due(now, lesson.delay_days if lesson else 0, rhythm)
    queue_lesson(session, subscriber, first, next_send(due, rhythm))


def import_rows(
    sessions: sessionmaker[Session],
    rows: Iterable[Row],
    settings: Settings,
    clock: Clock,
    *,
    course: PublishedCourse,
    consented: bool = False,
    source: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportResult:
    """Import ``rows``, committing every ``batch_size`` rows; skip invalid and known ones.

    ``course``: the course they join. ``consented``: the readers already agreed to
    receive this course, so they start as
    active without a confirmation email. ``source`` tags rows that have no source of their
    own. Raises :class:`ImportAborted` (rows before the failing one are committed) when a
    row fails for a reason other than its data.
    """
    result = ImportResult()
    seen: set[str] = set()
    pending = 0  # rows stored since the last commit
    line = 0  # the row being imported (or the last one read)
    with sessions() as session:
        try:
            for row in rows:
                line = row.line
                raw_email = (row.values.get("email") or "").strip()
                try:
                    data, hour = _validate(row, settings, source)
                    data = dataclasses.replace(data, course_id=course.id)
                except ValidationFailed as exc:
                    reason = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
                    result.skipped.append(Skipped(line, raw_email, reason))
                    continue
                key = data.email.lower()  # the same rule as find_by_email
                if key in seen:
                    reason = "the address appears earlier in the file"
                    result.skipped.append(Skipped(line, raw_email, reason))
                    continue
                seen.add(key)
                try:
                    # A savepoint per row: if the row fails, only the row is undone.
                    with session.begin_nested():
                        existing = find_by_email(session, data.email, course.id)
                        opted_out = existing is None and is_suppressed(
                            session, settings.secret_keys, data.email
                        )
                        if existing is None and not opted_out:
                            _enrol(session, data, hour, consented, settings, course, clock())
                except IntegrityError:
                    # Someone signed up with this address on the site while the import ran.
                    reason = "already in the database (signed up just now)"
                    result.skipped.append(Skipped(line, raw_email, reason))
                    continue
                if existing is not None:
                    reason = f"already in the database ({existing.status})"
                    result.skipped.append(Skipped(line, raw_email, reason))
                    continue
                if opted_out:
                    # Their data was erased, but they had unsubscribed or bounced: only
                    # their own signup on the site can bring them back.
                    reason = "unsubscribed or bounced earlier (on the opt-out list)"
                    result.skipped.append(Skipped(line, raw_email, reason))
                    continue
                pending += 1
                if pending >= batch_size:
                    # Short transactions: on SQLite the import holds the write lock while a
                    # batch is open, and signups on the site wait for it.
                    _commit(session, result, pending, line)
                    pending = 0
        except ImportAborted:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            # The failing row's savepoint is already undone; keep every row before it.
            _commit(session, result, pending, line, exc)
            raise ImportAborted(line, result) from exc
        _commit(session, result, pending, line)
    return result


def _commit(
    session: Session,
    result: ImportResult,
    pending: int,
    line: int,
    cause: BaseException | None = None,
) -> None:
    """Commit the rows stored since the last commit and count them as imported."""
    try:
        session.commit()
    except Exception as exc:
        # This batch is lost; the ones committed before it are kept and counted.
        raise ImportAborted(line, result) from (cause or exc)
    result.imported += pending
    # The committed rows are no longer needed; forgetting them keeps the session small.
    session.expunge_all()
