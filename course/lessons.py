"""One lesson: its fields, the checks they must pass, and its Markdown compiled once.

A lesson is edited as fields (in the admin's editor, or as a Markdown file with YAML front
matter, see course.coursefiles)::

    ---
    key: 2                 # its stable id in the course (never reused, kept on reordering)
    delay: 1               # days after the previous lesson (the first: after joining)
    subject: "Day {day} of {total}: Self-reflection"
    title: "Self-reflection"
    preheader: "One line shown as the inbox preview."
    ---
    The lesson, in Markdown.

``{day}`` and ``{total}`` are the only placeholders: the reader's own count ("Day 3 of 5"
for their third lesson), filled when the lesson is sent. Anything else that looks like a
placeholder (``{name}``, ``{{ name }}``, ``*|FNAME|*``) is an error, because it would reach
readers as it is written.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field, replace

from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field

#: The only placeholders a lesson may use, and where.
PLACEHOLDERS = ("day", "total")
_PLACEHOLDER_FIELDS = ("subject", "title", "preheader")
_LOOKS_LIKE_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}|\{[A-Za-z_][\w.]*\}|\*\|[^|]*\|\*")
MAX_DELAY_DAYS = 365

DEFAULT_EXERCISE_TITLE = "Today's reflection"
DEFAULT_BOOKING_PROMPT = "If it would help to talk this through, we are here."

# Raw HTML is off: lesson authors write Markdown, and nothing in a lesson can inject
# markup or script into an email or the admin.
_markdown = MarkdownIt("commonmark", {"html": False, "typographer": True}).enable(
    ["replacements", "smartquotes"]
)


class LessonError(ValueError):
    """A lesson that cannot be used, with the reason."""


class LessonFields(BaseModel):
    """A lesson as it is written and stored (in a course version, or a draft)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: int = Field(ge=1, le=99_999)
    delay_days: int = Field(0, ge=0, le=MAX_DELAY_DAYS)
    slug: str = ""
    subject: str = ""
    title: str = ""
    preheader: str = ""
    exercise_title: str = DEFAULT_EXERCISE_TITLE
    booking_prompt: str = DEFAULT_BOOKING_PROMPT
    # The lesson talks about a partner who may be dangerous: the email shows the reader's
    # country's domestic-abuse lines right after it.
    safety_note: bool = False
    body: str = ""


@dataclass(frozen=True)
class Lesson:
    """One lesson, compiled: the HTML and text bodies are computed once."""

    key: int
    delay_days: int
    slug: str
    subject: str
    title: str
    preheader: str
    exercise_title: str
    booking_prompt: str
    body_markdown: str
    body_html: str
    body_text: str
    safety_note: bool = False

    def for_reader(self, day: int, total: int) -> Lesson:
        """The lesson with ``{day}`` and ``{total}`` filled in for one reader's count."""

        def fill(text: str) -> str:
            return text.replace("{day}", str(day)).replace("{total}", str(total))

        return replace(
            self,
            subject=fill(self.subject),
            title=fill(self.title),
            preheader=fill(self.preheader),
        )


@dataclass
class LessonSet:
    """A course's lessons, compiled, in course order, and those that could not be used.

    ``order`` holds every lesson's key, broken ones included: a reader who reaches a broken
    lesson waits for it to be fixed instead of skipping it.
    """

    lessons: dict[int, Lesson] = field(default_factory=dict)
    order: tuple[int, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)  # where -> reason
    broken: dict[int, str] = field(default_factory=dict)  # key -> reason, for the send log

    @property
    def total(self) -> int:
        """How many lessons the course has."""
        return len(self.order)

    def get(self, key: int) -> Lesson | None:
        """The lesson with ``key``, or None if it is missing or broken."""
        return self.lessons.get(key)

    def next_for(self, received: set[int] | frozenset[int]) -> int | None:
        """The one rule of a reader's way through a course: the next lesson is the first in
        the course's current order that they have not received (in this run). So when the
        practice adds, removes or reorders lessons, nobody gets a lesson twice, nobody
        silently misses one, and a lesson added at the end reaches everyone still on the
        course. None: they have had every lesson."""
        return next((key for key in self.order if key not in received), None)

    def count_for(self, received: set[int] | frozenset[int], key: int) -> tuple[int, int]:
        """``(day, total)`` for the reader's "Day 3 of 5" when they get lesson ``key``: their
        own count, which stays true when lessons are added, removed or reordered."""
        had = set(received) - {key}
        day = len(had) + 1
        return day, day + sum(1 for k in self.order if k not in had and k != key)

    def position(self, key: int) -> int | None:
        """The lesson's place in the course (1 for the first), or None."""
        try:
            return self.order.index(key) + 1
        except ValueError:
            return None


def markdown_to_html(source: str) -> str:
    """Render lesson Markdown to HTML (no raw HTML passes through)."""
    return str(_markdown.render(source))


def markdown_to_text(source: str, width: int = 72) -> str:
    """A plain-text version of lesson Markdown: headings underlined, paragraphs wrapped."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", source.strip()):
        lines = block.splitlines()
        heading = re.match(r"^(#{1,6})\s+(.*)$", lines[0]) if len(lines) == 1 else None
        if heading:
            title = _strip_inline(heading.group(2))
            out.append(f"{title}\n{'-' * len(title)}")
            continue
        items: list[str] = []
        for line in lines:
            item = re.match(r"^\s*([-*+]|\d+[.)])\s+(.*)$", line)
            if item or not items:
                items.append(line if item else line.strip())
            else:
                items[-1] += " " + line.strip()
        wrapped = []
        for item_line in items:
            item = re.match(r"^\s*([-*+]|\d+[.)])\s+(.*)$", item_line)
            if item:
                marker = "-" if item.group(1) in "-*+" else item.group(1)
                wrapped.append(
                    textwrap.fill(
                        _strip_inline(item.group(2)),
                        width,
                        initial_indent=f"{marker} ",
                        subsequent_indent=" " * (len(marker) + 1),
                    )
                )
            else:
                wrapped.append(textwrap.fill(_strip_inline(item_line), width))
        out.append("\n".join(wrapped))
    return "\n\n".join(out) + "\n"


def _strip_inline(text: str) -> str:
    """Drop Markdown emphasis markers; keep the words."""
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)
    text = re.sub(r"(?<!\w)([*_])(.+?)\1(?!\w)", r"\2", text)
    return re.sub(r"`([^`]*)`", r"\1", text).strip()


def placeholder_problems(name: str, text: str) -> list[str]:
    """What is wrong with the placeholders in one field (an empty list: nothing)."""
    problems = []
    allowed = PLACEHOLDERS if name in _PLACEHOLDER_FIELDS else ()
    for match in _LOOKS_LIKE_PLACEHOLDER.finditer(text):
        token = match.group(0)
        if token.strip("{}") in allowed and token.startswith("{") and not token.startswith("{{"):
            continue
        where = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        hint = f"only {where} can be used here" if allowed else "no placeholder can be used here"
        problems.append(f"'{name}' has the unknown placeholder {token} ({hint})")
    return problems


def lesson_problems(fields: LessonFields) -> list[str]:
    """Everything wrong with a lesson's fields, one sentence each (empty: it can be used)."""
    problems = []
    for name in ("subject", "title"):
        if not getattr(fields, name).strip():
            problems.append(f"'{name}' is empty")
    if not fields.body.strip():
        problems.append("the lesson has no text")
    for name in ("slug", "subject", "title", "preheader", "exercise_title", "booking_prompt"):
        value = getattr(fields, name)
        if "\n" in value or "\r" in value:
            problems.append(f"'{name}' must be a single line")
    for name in ("subject", "title", "preheader", "exercise_title", "booking_prompt", "body"):
        problems.extend(placeholder_problems(name, getattr(fields, name)))
    return problems


def compile_lesson(fields: LessonFields) -> Lesson:
    """Check and compile one lesson, or raise :class:`LessonError` with every reason."""
    problems = lesson_problems(fields)
    if problems:
        raise LessonError("; ".join(problems))
    body = fields.body.strip()
    return Lesson(
        key=fields.key,
        delay_days=fields.delay_days,
        slug=fields.slug.strip(),
        subject=fields.subject.strip(),
        title=fields.title.strip(),
        preheader=fields.preheader.strip(),
        exercise_title=fields.exercise_title.strip() or DEFAULT_EXERCISE_TITLE,
        booking_prompt=fields.booking_prompt.strip() or DEFAULT_BOOKING_PROMPT,
        body_markdown=body,
        body_html=markdown_to_html(body),
        body_text=markdown_to_text(body),
        safety_note=fields.safety_note,
    )
