"""A course's content as it is stored and edited: its lessons in order, and the emails
after the last lesson. The same JSON is a published version (``course_versions``) and the
draft staff edit (``courses.draft``); :func:`compile_content` turns it into what the
sender renders. Validation lives here, so the editor, ``course courses import`` and
``course lessons check`` apply the very same checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from course.lessons import (
    Lesson,
    LessonError,
    LessonFields,
    LessonSet,
    compile_lesson,
    markdown_to_html,
    markdown_to_text,
    placeholder_problems,
)

MAX_LESSONS = 200


class AfterCourseFields(BaseModel):
    """The completion email (``days`` after the last lesson) or the follow-up check-in
    (``days`` after the completion)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = ""
    body: str = ""
    days: int = Field(1, ge=0, le=365)


class CourseContent(BaseModel):
    """Everything in a course that is versioned: the lessons, and what comes after."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lessons: tuple[LessonFields, ...] = ()
    completion: AfterCourseFields | None = None
    followup: AfterCourseFields | None = None

    def to_json(self) -> str:
        """The stored form."""
        return self.model_dump_json(exclude_defaults=False)

    @classmethod
    def from_json(cls, text: str) -> CourseContent:
        """Read the stored form (raises ValueError when it is not valid content)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"not valid course content: {exc}") from None

    def next_key(self) -> int:
        """A key no lesson of this content uses (keys are never reused within a version;
        the editor also avoids keys of earlier versions, see course.courses)."""
        return max((lesson.key for lesson in self.lessons), default=0) + 1

    def lesson(self, key: int) -> LessonFields | None:
        """The lesson with ``key``, or None."""
        return next((lesson for lesson in self.lessons if lesson.key == key), None)


@dataclass(frozen=True)
class AfterCourseEmail:
    """The completion or follow-up email, compiled."""

    subject: str
    body_markdown: str
    body_html: str
    body_text: str
    days: int


@dataclass
class CompiledCourse(LessonSet):
    """A course's content ready to send: lessons by key in order, the after-course emails,
    and what could not be used."""

    completion: AfterCourseEmail | None = None
    followup: AfterCourseEmail | None = None


def after_course_problems(name: str, fields: AfterCourseFields) -> list[str]:
    """What is wrong with the completion or follow-up email."""
    problems = []
    if not fields.subject.strip():
        problems.append(f"the {name} email's subject is empty")
    if "\n" in fields.subject:
        problems.append(f"the {name} email's subject must be a single line")
    if not fields.body.strip():
        problems.append(f"the {name} email has no text")
    for field_name in ("subject", "body"):
        problems.extend(
            f"the {name} email: {p}"
            for p in placeholder_problems(field_name, getattr(fields, field_name))
        )
    return problems


def lesson_label(position: int, fields: LessonFields) -> str:
    """How a problem names a lesson: its place and title."""
    title = fields.title.strip() or fields.subject.strip() or "untitled"
    return f"lesson {position} ({title})"


def compile_content(content: CourseContent) -> CompiledCourse:
    """Compile every lesson and email; problems land in ``errors`` (by lesson label)."""
    result = CompiledCourse(order=tuple(lesson.key for lesson in content.lessons))
    seen: set[int] = set()
    for position, fields in enumerate(content.lessons, start=1):
        label = lesson_label(position, fields)
        if fields.key in seen:
            result.errors[label] = f"the key {fields.key} is used by another lesson"
            continue
        seen.add(fields.key)
        try:
            result.lessons[fields.key] = compile_lesson(fields)
        except LessonError as exc:
            result.errors[label] = result.broken[fields.key] = str(exc)
    if len(content.lessons) > MAX_LESSONS:
        result.errors["course"] = f"a course has at most {MAX_LESSONS} lessons"
    for name in ("completion", "followup"):
        fields = getattr(content, name)
        if fields is None:
            continue
        problems = after_course_problems(name, fields)
        if problems:
            result.errors[f"{name} email"] = "; ".join(problems)
            continue
        body = fields.body.strip()
        setattr(
            result,
            name,
            AfterCourseEmail(
                subject=fields.subject.strip(),
                body_markdown=body,
                body_html=markdown_to_html(body),
                body_text=markdown_to_text(body),
                days=fields.days,
            ),
        )
    return result


def content_problems(content: CourseContent) -> list[str]:
    """Every problem, one line each, for the editor and the commands."""
    compiled = compile_content(content)
    problems = [f"{where}: {reason}" for where, reason in compiled.errors.items()]
    if not content.lessons:
        problems.append("the course has no lessons")
    return problems


__all__ = [
    "AfterCourseEmail",
    "AfterCourseFields",
    "CompiledCourse",
    "CourseContent",
    "Lesson",
    "LessonFields",
    "compile_content",
    "content_problems",
]
