"""Loads the lesson files (``lessons/*.md``) and compiles their Markdown once.

A lesson file is YAML front matter followed by Markdown::

    ---
    day: 1
    subject: "Day {day} of {total}: Where insecurity comes from"
    title: "Where insecurity comes from"
    preheader: "One line shown as the inbox preview."
    booking_prompt: "An invitation to book a session."
    ---
    The lesson, in Markdown.

The course is the set of files: adding a sixth lesson takes only a new file with ``day: 6``.
A broken file is reported (file and reason) and skipped; the other lessons still go out,
and subscribers who reach the broken day wait for it to be fixed instead of skipping it.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from markdown_it import MarkdownIt

REQUIRED = ("day", "subject", "title")
OPTIONAL_TEXT = ("preheader", "exercise_title", "booking_prompt", "slug")

# Raw HTML is off: lesson authors write Markdown, and nothing in a lesson file can inject
# markup or script into an email or the admin.
_markdown = MarkdownIt("commonmark", {"html": False, "typographer": True}).enable(
    ["replacements", "smartquotes"]
)


class LessonError(ValueError):
    """A lesson file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Lesson:
    """One lesson, compiled: the HTML and text bodies are computed once at load."""

    day: int
    slug: str
    subject: str
    title: str
    preheader: str
    exercise_title: str
    booking_prompt: str
    body_markdown: str
    body_html: str
    body_text: str
    path: Path
    # The lesson talks about a partner who may be dangerous: the email shows the reader's
    # country's domestic-abuse lines right after it (front matter ``safety_note: true``).
    safety_note: bool = False


@dataclass
class LessonSet:
    """All lessons found, by day, and the files that could not be used."""

    lessons: dict[int, Lesson] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file name -> reason
    total: int = 0  # the course length: the number of lesson files, broken ones included
    directory: Path | None = None  # where they were read from

    def get(self, day: int) -> Lesson | None:
        """The lesson for ``day``, or None if it is missing or broken."""
        return self.lessons.get(day)


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


def _text_field(meta: dict[str, Any], name: str, default: str = "") -> str:
    value = meta.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str | int | float):
        raise LessonError(f"'{name}' must be text")
    text = str(value).strip()
    if "\n" in text or "\r" in text:
        raise LessonError(f"'{name}' must be a single line")
    return text


def load_lesson(path: Path, total: int) -> Lesson:
    """Parse and compile one lesson file, or raise :class:`LessonError` with the reason."""
    try:
        post = frontmatter.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LessonError("the file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise LessonError(f"the front matter is not valid YAML: {exc}") from None
    meta = dict(post.metadata)
    missing = [name for name in REQUIRED if meta.get(name) in (None, "")]
    if missing:
        raise LessonError(f"missing front matter field(s): {', '.join(missing)}")
    day = meta["day"]
    if isinstance(day, bool) or not isinstance(day, int) or day < 1:
        raise LessonError(f"'day' must be a whole number from 1, got {day!r}")
    body = post.content.strip()
    if not body:
        raise LessonError("the lesson has no text after the front matter")
    slug = _text_field(meta, "slug") or re.sub(r"^\d+[-_]?", "", path.stem)

    def fill(text: str) -> str:
        return text.replace("{day}", str(day)).replace("{total}", str(total))

    return Lesson(
        day=day,
        slug=slug,
        subject=fill(_text_field(meta, "subject")),
        title=fill(_text_field(meta, "title")),
        preheader=fill(_text_field(meta, "preheader")),
        exercise_title=_text_field(meta, "exercise_title", "Today's reflection"),
        booking_prompt=_text_field(
            meta, "booking_prompt", "If it would help to talk this through, we are here."
        ),
        body_markdown=body,
        body_html=markdown_to_html(body),
        body_text=markdown_to_text(body),
        path=path,
        safety_note=_flag(meta, "safety_note"),
    )


def _flag(meta: dict[str, Any], name: str) -> bool:
    value = meta.get(name, False)
    if not isinstance(value, bool):
        raise LessonError(f"'{name}' must be true or false")
    return value


def lesson_files(directory: Path) -> list[Path]:
    """The lesson files in ``directory``, in name order: every ``*.md`` but a README."""
    return sorted(p for p in directory.glob("*.md") if p.stem.upper() != "README")


def load_lessons(directory: Path) -> LessonSet:
    """Load every lesson file in ``directory``; broken files land in ``errors``."""
    result = LessonSet(directory=directory)
    paths = lesson_files(directory)
    result.total = len(paths)
    for path in paths:
        try:
            lesson = load_lesson(path, result.total)
        except LessonError as exc:
            result.errors[path.name] = str(exc)
            continue
        if lesson.day in result.lessons:
            other = result.lessons[lesson.day].path.name
            result.errors[path.name] = f"day {lesson.day} is already used by {other}"
            continue
        if lesson.day > result.total:
            result.errors[path.name] = (
                f"day {lesson.day} is past the course length ({result.total} lesson files)"
            )
            continue
        result.lessons[lesson.day] = lesson
    return result


class LessonLibrary:
    """The lesson folder, reloaded when a file in it changes.

    The practice edits lessons while the scheduler runs; a long-lived sender checks the
    folder's modification times (a few ``stat`` calls) once per tick and recompiles only
    when something changed.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._lessons = LessonSet()

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for path in lesson_files(self.directory):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def current(self) -> LessonSet:
        """The lessons as they are on disk now (compiled once per change)."""
        stamp = self._fingerprint()
        if stamp != self._stamp:
            self._lessons = load_lessons(self.directory)
            self._stamp = stamp
        return self._lessons
