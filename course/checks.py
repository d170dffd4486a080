"""Is the content usable? Templates and courses, checked the way a sender will use them.

One check for every place that asks: ``course lessons check``, the admin's editor before it
saves or publishes, the start of the web app and of ``course scheduler`` (which log each
problem), and ``/healthz`` (which answers 503 while there is one). Every lesson, the
confirmation and the after-course emails are rendered for a sample reader, so a template
that fails only when filled in is found too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime

from jinja2 import Environment, TemplateError, TemplateNotFound, TemplateSyntaxError
from sqlalchemy.exc import SQLAlchemyError

from course.courses import Catalogue, CourseLibrary, PublishedCourse
from course.crisis import stale, unverified
from course.render import Renderer, sample_reader

log = logging.getLogger("course.checks")

#: The email templates the sender cannot do without (each as .html and .txt).
EMAIL_TEMPLATES = ("confirm", "lesson", "completion", "followup")


@dataclass
class ContentReport:
    """What was checked: lines that are fine, and problems (each names its file)."""

    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def describe(exc: Exception, where: str) -> str:
    """One line for a problem: the file it is in (``where`` if the error does not say),
    the line where known, and what is wrong."""
    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.filename or exc.name or where}: line {exc.lineno}: {exc.message}"
    if isinstance(exc, TemplateNotFound):
        return f"{exc.name}: the template is missing"
    if isinstance(exc, TemplateError):
        return f"{getattr(exc, 'filename', None) or where}: {exc}"
    return f"{where}: cannot be rendered: {type(exc).__name__}: {exc}"


def check_templates(env: Environment, folder: str) -> list[str]:
    """Problems with the templates under ``folder``: any that does not compile, and for the
    emails, any that is missing."""
    problems = []
    try:
        names = env.list_templates()
    except Exception as exc:  # a missing or unreadable templates folder
        return [f"templates cannot be listed: {exc}"]
    if folder == "email":
        for template in EMAIL_TEMPLATES:
            for ext in ("html", "txt"):
                if f"email/{template}.{ext}" not in names:
                    problems.append(f"email/{template}.{ext}: the template is missing")
    for name in names:
        if name.startswith(f"{folder}/") and name.endswith((".html", ".txt")):
            try:
                env.get_template(name)
            except TemplateError as exc:
                problems.append(describe(exc, name))
    return problems


def check_course(renderer: Renderer, course: PublishedCourse, now: datetime) -> ContentReport:
    """Render every email of one course (a published version or a draft) for a sample
    reader: its problems, and the emails that are fine."""
    report = ContentReport()
    content = course.content
    if content.total == 0:
        report.problems.append("the course has no lessons")
    for name, reason in content.errors.items():
        report.problems.append(f"{name}: {reason}")
    emails: list[tuple[str, int, str]] = [("confirm", 1, "confirmation email")]
    for position, key in enumerate(content.order, start=1):
        lesson = content.get(key)
        if lesson is not None:
            emails.append(("lesson", key, f"lesson {position}: {lesson.title}"))
    for kind in ("completion", "followup"):
        if getattr(content, kind) is not None:
            emails.append((kind, 0, f"{kind} email"))
    for kind, number, label in emails:
        try:
            renderer.build(kind, number, sample_reader(renderer.settings), course, now)
        except Exception as exc:  # a template, css-inline, a bad value: named all the same
            problem = describe(exc, label)
            if problem not in report.problems:  # a broken template breaks every lesson
                report.problems.append(problem)
        else:
            report.ok.append(label)
    return report


def check_content(renderer: Renderer, courses: Catalogue, now: datetime) -> ContentReport:
    """Check the email templates and every course readers can be on."""
    report = ContentReport()
    report.problems.extend(check_templates(renderer.env, "email"))
    live = [c for c in courses if c.version_id is not None]
    if not any(c.open_for_signup for c in courses):
        report.problems.append("no course is open for signups (publish one in the admin)")
    for course in live:
        found = check_course(renderer, course, now)
        report.ok.extend(f"{course.slug}: {line}" for line in found.ok)
        report.problems.extend(
            f"{course.slug}: {p}" for p in found.problems if p not in report.problems
        )
    return report


def crisis_warnings(renderer: Renderer, today: date) -> list[str]:
    """Crisis resources that need a person to check them: not checked for over a year, or
    never verified against their source (docs/crisis-resources.md)."""
    warnings = []
    shown = set(renderer.settings.crisis_countries)
    data = {c: r for c, r in renderer.crisis.items() if not shown or c in shown or r.is_fallback}
    for code in stale(data, today):
        warnings.append(
            f"crisis resources for {code} were last checked on {data[code].checked}, over a "
            "year ago: check them against their source and update the date"
        )
    unchecked = unverified(data)
    if unchecked:
        warnings.append(
            "crisis resources never verified against their source: "
            + ", ".join(unchecked)
            + " (verify the ones for your readers' countries; docs/crisis-resources.md)"
        )
    return warnings


class ContentMonitor:
    """The latest :class:`ContentReport`, recomputed when a course's published version
    changes or after a minute (a health check may ask every few seconds).

    ``page_problems`` are those of the web pages' templates, which the web app checks with
    its own Jinja environment (they use its filters) when it starts.
    """

    MAX_AGE_SECONDS = 60.0

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.page_problems: list[str] = []
        self._for: tuple[tuple[int, int | None, str], ...] | None = None
        self._at = 0.0
        self._report = ContentReport()

    def report(self, courses: Catalogue, now: datetime) -> ContentReport:
        """The report for these courses, fresh enough."""
        versions = tuple((c.id, c.version_id, c.status) for c in courses)
        if versions != self._for or time.monotonic() - self._at > self.MAX_AGE_SECONDS:
            report = check_content(self.renderer, courses, now)
            report.problems.extend(self.page_problems)
            self._report = report
            self._for = versions
            self._at = time.monotonic()
        return self._report


def courses_at_start(library: CourseLibrary, who: str) -> Catalogue | None:
    """The courses, for the check at start-up; None (and a warning) while the database
    cannot be read: a process starts anyway, and ``/healthz`` says what is wrong."""
    try:
        return library.current()
    except SQLAlchemyError as exc:
        log.warning(
            "%s: the courses could not be read at start, so they were not checked: %s",
            who,
            type(exc).__name__,
        )
        return None


def log_content_problems(report: ContentReport, who: str) -> None:
    """At start-up: each problem as one error line naming its file."""
    for problem in report.problems:
        log.error("%s: content problem: %s", who, problem)
