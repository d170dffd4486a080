"""A course as a folder of Markdown files, for practices that keep their courses in git.

``course courses export SLUG DIR`` writes one, ``course courses import DIR`` reads one
(and publishes it as a new version); the repository's ``lessons/`` folder is the first
course in this form. A folder holds:

- ``course.yaml``: ``slug``, ``title``, ``description``, ``language``, ``weekdays_only``,
  ``send_hour``, ``booking_url`` (all optional but the slug when importing a new course);
- one file per lesson, in course order by file name (``01-where-it-comes-from.md``, ...):
  YAML front matter (``key``, ``delay``, ``subject``, ``title``, ``preheader``,
  ``exercise_title``, ``booking_prompt``, ``safety_note``, ``slug``) and the Markdown;
- optionally ``completion.md`` and ``followup.md`` (front matter ``subject`` and ``days``).

Older lesson files named their place with ``day:``; it is read as the key. A lesson
without ``delay`` comes 1 day after the previous one (the first: right after joining).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from course.content import AfterCourseFields, CourseContent
from course.lessons import DEFAULT_BOOKING_PROMPT, DEFAULT_EXERCISE_TITLE, LessonFields

COURSE_FILE = "course.yaml"
AFTER_COURSE_FILES = {"completion": "completion.md", "followup": "followup.md"}
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# pydantic's ``pattern`` finds a match anywhere in the text ("x http://y" matches
# "https?://"), so every pattern here is anchored at both ends.
_LANGUAGE = r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?$"
_BOOKING_URL = r"^https?://\S+$"


class CourseMeta(BaseModel):
    """A course's settings as ``course.yaml`` holds them."""

    model_config = ConfigDict(extra="forbid")

    slug: str | None = Field(None, max_length=64, pattern=f"^(?:{SLUG.pattern})$")
    title: str | None = Field(None, max_length=200)
    description: str = ""
    language: str = Field("en", max_length=16, pattern=_LANGUAGE)
    weekdays_only: bool = False
    send_hour: int | None = Field(None, ge=0, le=23)
    booking_url: str | None = Field(None, max_length=2000, pattern=_BOOKING_URL)


@dataclass
class CourseFolder:
    """What a folder holds, and the files that could not be read (file name -> reason)."""

    meta: CourseMeta
    content: CourseContent
    errors: dict[str, str] = field(default_factory=dict)


class CourseFileError(ValueError):
    """A file that cannot be read, with the reason."""


def lesson_files(directory: Path) -> list[Path]:
    """The lesson files in ``directory``, in name order: every ``*.md`` but a README and
    the after-course emails."""
    skip = {"README", *(Path(name).stem.upper() for name in AFTER_COURSE_FILES.values())}
    return sorted(p for p in directory.glob("*.md") if p.stem.upper() not in skip)


def _read_text(path: Path) -> str:
    """The file's text; a byte order mark (some Windows editors write one) is dropped."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CourseFileError("the file is not UTF-8 text") from None
    except OSError as exc:
        raise CourseFileError(f"the file cannot be read: {exc.strerror or exc}") from None


def _front_matter(path: Path) -> tuple[dict[str, Any], str]:
    text = _read_text(path)
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        raise CourseFileError(f"the front matter is not valid YAML: {exc}") from None
    if not post.metadata:
        raise CourseFileError("missing front matter (the --- block at the top)")
    return dict(post.metadata), post.content.strip()


def _text(meta: dict[str, Any], name: str, default: str = "") -> str:
    value = meta.pop(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CourseFileError(f"'{name}' must be text")
    return str(value)


def read_lesson_file(path: Path, first: bool) -> LessonFields:
    """One lesson file as fields (``first``: the course's first lesson, for the default
    delay). Raises :class:`CourseFileError`."""
    meta, body = _front_matter(path)
    key = meta.pop("key", None)
    legacy_day = meta.pop("day", None)
    key = legacy_day if key is None else key
    if isinstance(key, bool) or not isinstance(key, int) or key < 1:
        raise CourseFileError(f"'key' must be a whole number from 1, got {key!r}")
    delay = meta.pop("delay", 0 if first else 1)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 365:
        raise CourseFileError(f"'delay' must be a number of days from 0 to 365, got {delay!r}")
    safety = meta.pop("safety_note", False)
    if not isinstance(safety, bool):
        raise CourseFileError("'safety_note' must be true or false")
    fields = {
        "key": key,
        "delay_days": delay,
        "slug": _text(meta, "slug") or re.sub(r"^\d+[-_]?", "", path.stem),
        "subject": _text(meta, "subject"),
        "title": _text(meta, "title"),
        "preheader": _text(meta, "preheader"),
        "exercise_title": _text(meta, "exercise_title", DEFAULT_EXERCISE_TITLE),
        "booking_prompt": _text(meta, "booking_prompt", DEFAULT_BOOKING_PROMPT),
        "safety_note": safety,
        "body": body,
    }
    if meta:
        raise CourseFileError(f"unknown front matter field(s): {', '.join(sorted(meta))}")
    return LessonFields(**fields)


def _read_after_course(path: Path) -> AfterCourseFields:
    meta, body = _front_matter(path)
    subject = _text(meta, "subject")
    days = meta.pop("days", 1)
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 365:
        raise CourseFileError(f"'days' must be a number of days from 0 to 365, got {days!r}")
    if meta:
        raise CourseFileError(f"unknown front matter field(s): {', '.join(sorted(meta))}")
    return AfterCourseFields(subject=subject, body=body, days=days)


def read_course_folder(directory: Path) -> CourseFolder:
    """Read a course folder. Unreadable files are reported in ``errors`` and left out; a
    missing or broken ``course.yaml`` raises :class:`CourseFileError`."""
    if not directory.is_dir():
        raise CourseFileError(f"{directory} is not a folder")
    meta_path = directory / COURSE_FILE
    meta = CourseMeta()
    if meta_path.exists():
        try:
            raw = yaml.safe_load(_read_text(meta_path)) or {}
            if not isinstance(raw, dict):
                raise CourseFileError("expected fields such as 'slug: ...'")
            meta = CourseMeta.model_validate(raw)
        except CourseFileError as exc:
            raise CourseFileError(f"{COURSE_FILE}: {exc}") from None
        except yaml.YAMLError as exc:
            raise CourseFileError(f"{COURSE_FILE} is not valid YAML: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors()
            )
            raise CourseFileError(f"{COURSE_FILE}: {problems}") from None
    errors: dict[str, str] = {}
    lessons: list[LessonFields] = []
    seen: dict[int, str] = {}
    for path in lesson_files(directory):
        try:
            lesson = read_lesson_file(path, first=not lessons and not errors)
        except (CourseFileError, ValidationError) as exc:
            errors[path.name] = _reason(exc)
            continue
        if lesson.key in seen:
            errors[path.name] = f"key {lesson.key} is already used by {seen[lesson.key]}"
        seen.setdefault(lesson.key, path.name)
        lessons.append(lesson)
    after: dict[str, AfterCourseFields] = {}
    for name, file_name in AFTER_COURSE_FILES.items():
        path = directory / file_name
        if path.exists():
            try:
                after[name] = _read_after_course(path)
            except (CourseFileError, ValidationError) as exc:
                errors[file_name] = _reason(exc)
    content = CourseContent(lessons=tuple(lessons), **after)
    return CourseFolder(meta=meta, content=content, errors=errors)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"'{e['loc'][0]}': {e['msg']}" for e in exc.errors())
    return str(exc)


def _dump_front_matter(fields: dict[str, Any], body: str) -> str:
    head = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=10_000)
    return f"---\n{head}---\n\n{body.strip()}\n"


def lesson_file_name(position: int, lesson: LessonFields) -> str:
    """``01-where-insecurity-comes-from.md``: the place, then the slug (or the key)."""
    slug = re.sub(r"[^a-z0-9]+", "-", lesson.slug.lower()).strip("-") or f"lesson-{lesson.key}"
    return f"{position:02d}-{slug}.md"


def lesson_file_text(lesson: LessonFields, first: bool) -> str:
    """One lesson as a file (fields left at their defaults are not written)."""
    fields: dict[str, Any] = {"key": lesson.key}
    if lesson.delay_days != (0 if first else 1):
        fields["delay"] = lesson.delay_days
    if lesson.slug:
        fields["slug"] = lesson.slug
    fields["subject"] = lesson.subject
    fields["title"] = lesson.title
    if lesson.preheader:
        fields["preheader"] = lesson.preheader
    if lesson.exercise_title != DEFAULT_EXERCISE_TITLE:
        fields["exercise_title"] = lesson.exercise_title
    if lesson.booking_prompt != DEFAULT_BOOKING_PROMPT:
        fields["booking_prompt"] = lesson.booking_prompt
    if lesson.safety_note:
        fields["safety_note"] = True
    return _dump_front_matter(fields, lesson.body)


def write_course_folder(meta: CourseMeta, content: CourseContent, directory: Path) -> list[Path]:
    """Write the course into ``directory`` (created if needed; its other ``*.md`` files
    and ``course.yaml`` are replaced). Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.md"):
        if old.is_file() and old.stem.upper() != "README":
            old.unlink()
    written = []
    meta_text = yaml.safe_dump(
        meta.model_dump(exclude_defaults=True, exclude_none=True),
        sort_keys=False,
        allow_unicode=True,
        width=10_000,
    )
    (directory / COURSE_FILE).write_text(meta_text, encoding="utf-8")
    written.append(directory / COURSE_FILE)
    for position, lesson in enumerate(content.lessons, start=1):
        path = directory / lesson_file_name(position, lesson)
        path.write_text(lesson_file_text(lesson, first=position == 1), encoding="utf-8")
        written.append(path)
    for name, file_name in AFTER_COURSE_FILES.items():
        after: AfterCourseFields | None = getattr(content, name)
        if after is not None:
            path = directory / file_name
            text = _dump_front_matter({"subject": after.subject, "days": after.days}, after.body)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
