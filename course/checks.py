"""Is the content usable? Templates and lessons, checked the way a sender will use them.

One check for every place that asks: ``course lessons check``, the start of the web app and
of ``course scheduler`` (which log each problem with its file), and ``/healthz`` (which
answers 503 while there is one). Every lesson and the confirmation are rendered for a
sample reader, so a template that fails only when filled in is found too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime

from jinja2 import Environment, TemplateError, TemplateNotFound, TemplateSyntaxError

from course.crisis import stale, unverified
from course.lessons import LessonSet
from course.render import Renderer, sample_reader

log = logging.getLogger("course.checks")

#: The email templates the sender cannot do without (each as .html and .txt).
EMAIL_TEMPLATES = ("confirm", "lesson")


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


def check_content(renderer: Renderer, lessons: LessonSet, now: datetime) -> ContentReport:
    """Check the templates and render every lesson and the confirmation email."""
    report = ContentReport()
    report.problems.extend(check_templates(renderer.env, "email"))
    if lessons.total == 0:
        report.problems.append(f"{lessons.directory}: no lesson files (*.md) found")
    for name, reason in sorted(lessons.errors.items()):
        report.problems.append(f"{name}: {reason}")
    emails: list[tuple[str, int, str]] = [("confirm", 1, "confirmation email")]
    emails += [
        ("lesson", day, f"lesson {day}: {lessons.lessons[day].subject}")
        for day in sorted(lessons.lessons)
    ]
    for kind, number, label in emails:
        where = lessons.lessons[number].path.name if kind == "lesson" else "email/confirm.*"
        try:
            renderer.build(kind, number, sample_reader(renderer.settings), lessons, now)
        except Exception as exc:  # a template, css-inline, a bad value: named all the same
            problem = describe(exc, where)
            if problem not in report.problems:  # a broken template breaks every lesson
                report.problems.append(problem)
        else:
            report.ok.append(label)
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
    """The latest :class:`ContentReport`, recomputed when the lessons change or after a
    minute (a health check may ask every few seconds; rendering takes milliseconds).

    ``page_problems`` are those of the web pages' templates, which the web app checks with
    its own Jinja environment (they use its filters) when it starts.
    """

    MAX_AGE_SECONDS = 60.0

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.page_problems: list[str] = []
        self._for: LessonSet | None = None
        self._at = 0.0
        self._report = ContentReport()

    def report(self, lessons: LessonSet, now: datetime) -> ContentReport:
        """The report for this lesson set, fresh enough."""
        if lessons is not self._for or time.monotonic() - self._at > self.MAX_AGE_SECONDS:
            report = check_content(self.renderer, lessons, now)
            report.problems.extend(self.page_problems)
            self._report = report
            self._for = lessons
            self._at = time.monotonic()
        return self._report


def log_content_problems(report: ContentReport, who: str) -> None:
    """At start-up: each problem as one error line naming its file."""
    for problem in report.problems:
        log.error("%s: content problem: %s", who, problem)
