"""Courses in the database: the published versions readers get, drafts, and publishing.

A course's content is never edited in place. Staff work on a draft (the same JSON as a
version, in ``courses.draft``); publishing stores it as a new numbered version with its
author and time and points the course at it. Readers get each lesson as the published
version says at the moment it is sent (course.sending), so a fix reaches everyone who has
not had that lesson yet, and nobody gets a half-edited lesson.

:class:`CourseLibrary` is what the sender and the web app read: every published course,
compiled once per version. Functions take a session and never commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from course.content import CompiledCourse, CourseContent, compile_content, content_problems
from course.coursefiles import COURSE_FILE, SLUG, CourseMeta, read_course_folder
from course.lessons import Lesson, LessonError, compile_lesson
from course.models import Course, CourseStatus, CourseVersion

#: How stale the list of open courses may be when a signup is checked against it.
SIGNUP_CATALOGUE_SECONDS = 2.0


class CourseProblem(ValueError):
    """A course cannot be published or imported as it is; the message says why."""


@dataclass(frozen=True)
class PublishedCourse:
    """A course as readers get it now: its settings and its compiled published content."""

    id: int
    slug: str
    title: str
    description: str
    language: str
    status: str
    booking_url: str | None
    send_hour: int | None
    weekdays_only: bool
    version_id: int | None
    version_number: int | None
    content: CompiledCourse

    @property
    def open_for_signup(self) -> bool:
        """Published, with lessons: new readers may join."""
        return self.status == CourseStatus.PUBLISHED and self.content.total > 0


class Catalogue:
    """Every course, by id, as of one read of the ``courses`` table."""

    def __init__(self, courses: dict[int, PublishedCourse]) -> None:
        self._courses = courses

    def get(self, course_id: int) -> PublishedCourse | None:
        """The course with this id, or None."""
        return self._courses.get(course_id)

    def by_slug(self, slug: str) -> PublishedCourse | None:
        """The course with this slug, or None."""
        return next((c for c in self._courses.values() if c.slug == slug), None)

    def __iter__(self) -> Iterator[PublishedCourse]:
        return iter(sorted(self._courses.values(), key=lambda c: c.id))

    def open(self) -> list[PublishedCourse]:
        """The courses new readers can join, oldest first."""
        return [c for c in self if c.open_for_signup]

    def default(self) -> PublishedCourse | None:
        """The course a signup that names none joins: the oldest open course."""
        courses = self.open()
        return courses[0] if courses else None


_EMPTY = CompiledCourse()


class CourseLibrary:
    """Every course with its published content, compiled once per version.

    Each :meth:`current` reads the small ``courses`` table (one query) and compiles only a
    version it has not seen, so an edit published in the admin reaches the next tick of
    every sender and the next request of every web worker.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        # Reads only: on SQLite a read-only session never waits for the write lock, so a
        # request that already writes can look up its course (course.db).
        engine = sessions.kw["bind"]
        self.sessions = sessionmaker(
            engine.execution_options(course_readonly=True), expire_on_commit=False
        )
        self._lock = threading.Lock()
        self._compiled: dict[int, CompiledCourse] = {}
        self._recent: tuple[float, Catalogue] | None = None

    def recent(self, max_age: float = SIGNUP_CATALOGUE_SECONDS) -> Catalogue:
        """The courses as read at most ``max_age`` seconds ago by this process.

        For signups, which only ask which courses are open: a signup answers without
        reading the ``courses`` table each time, and a course closed in the admin stops
        taking signups in every worker within ``max_age``. Everything that sends, shows or
        changes a course reads :meth:`current`.
        """
        now = time.monotonic()
        with self._lock:
            recent = self._recent
        if recent is not None and now - recent[0] < max_age:
            return recent[1]
        catalogue = self.current()
        with self._lock:
            self._recent = (now, catalogue)
        return catalogue

    def forget_recent(self) -> None:
        """Make the next :meth:`recent` read the table (this process changed a course)."""
        with self._lock:
            self._recent = None

    def current(self, session: Session | None = None) -> Catalogue:
        """The courses as they are in the database now."""
        if session is None:
            with self.sessions() as own:
                return self.current(own)
        rows = session.execute(
            select(Course, CourseVersion.number)
            .outerjoin(CourseVersion, CourseVersion.id == Course.published_version_id)
            .order_by(Course.id)
        ).all()
        return Catalogue(
            {
                course.id: course_view(
                    course,
                    self._content(session, course.published_version_id),
                    version_id=course.published_version_id,
                    version_number=number,
                )
                for course, number in rows
            }
        )

    def _content(self, session: Session, version_id: int | None) -> CompiledCourse:
        if version_id is None:
            return _EMPTY
        with self._lock:
            found = self._compiled.get(version_id)
        if found is not None:
            return found
        text = session.scalar(select(CourseVersion.content).where(CourseVersion.id == version_id))
        compiled = compile_content(CourseContent.from_json(text)) if text else _EMPTY
        with self._lock:
            self._compiled[version_id] = compiled
        return compiled


def course_view(
    course: Course,
    content: CompiledCourse,
    *,
    version_id: int | None = None,
    version_number: int | None = None,
) -> PublishedCourse:
    """A course with the given compiled content: the published one (with its version), or
    a draft for a preview or a test send (``version_id`` None: never cached)."""
    return PublishedCourse(
        id=course.id,
        slug=course.slug,
        title=course.title,
        description=course.description,
        language=course.language,
        status=course.status,
        booking_url=course.booking_url,
        send_hour=course.send_hour,
        weekdays_only=course.weekdays_only,
        version_id=version_id,
        version_number=version_number,
        content=content,
    )


def folder_view(directory: Path) -> tuple[PublishedCourse, dict[str, str]]:
    """A course folder as a course that was never stored (id 0), for checks and previews
    without a database; and the files that could not be read."""
    folder = read_course_folder(directory)
    meta = folder.meta
    course = Course(
        id=0,
        slug=meta.slug or directory.name,
        title=meta.title or directory.name,
        description=meta.description,
        language=meta.language,
        status=CourseStatus.PUBLISHED,
        booking_url=meta.booking_url,
        send_hour=meta.send_hour,
        weekdays_only=meta.weekdays_only,
    )
    return course_view(course, compile_content(folder.content)), folder.errors


def lesson_in_history(
    session: Session, course: PublishedCourse, key: int
) -> Lesson | None:
    """Lesson ``key`` as published now, or, if it was removed since, as its latest
    published version had it (a reader can still read a lesson they received)."""
    found = course.content.get(key)
    if found is not None:
        return found
    for text in session.scalars(
        select(CourseVersion.content)
        .where(CourseVersion.course_id == course.id)
        .order_by(CourseVersion.number.desc())
    ):
        fields = CourseContent.from_json(text).lesson(key)
        if fields is not None:
            try:
                return compile_lesson(fields)
            except LessonError:
                return None
    return None


# -- editing and publishing ---------------------------------------------------------------


def published_content(session: Session, course: Course) -> CourseContent:
    """The content readers get now (empty for a course never published)."""
    if course.published_version_id is None:
        return CourseContent()
    text = session.scalar(
        select(CourseVersion.content).where(CourseVersion.id == course.published_version_id)
    )
    return CourseContent.from_json(text) if text else CourseContent()


def draft_content(session: Session, course: Course) -> CourseContent:
    """The working copy: the open draft, or else the published content."""
    if course.draft:
        return CourseContent.from_json(course.draft)
    return published_content(session, course)


def save_draft(course: Course, content: CourseContent, now: datetime) -> None:
    """Keep ``content`` as the course's draft (readers do not see it)."""
    course.draft = content.to_json()
    course.draft_updated_at = now


def discard_draft(course: Course) -> None:
    """Throw the draft away; the published content stays as it is."""
    course.draft = None
    course.draft_updated_at = None


def used_keys(session: Session, course_id: int) -> set[int]:
    """Every lesson key any version of the course has used: a new lesson never takes the
    key of a removed one, so a reader's history can never point at the wrong lesson."""
    keys: set[int] = set()
    for text in session.scalars(
        select(CourseVersion.content).where(CourseVersion.course_id == course_id)
    ):
        keys.update(lesson.key for lesson in CourseContent.from_json(text).lessons)
    return keys


def publish(
    session: Session,
    course: Course,
    content: CourseContent,
    *,
    author: str,
    now: datetime,
    operator_id: int | None = None,
    note: str | None = None,
) -> CourseVersion:
    """Store ``content`` as the course's next version and make it the published one.

    Refuses (:class:`CourseProblem`) content with any problem: readers only ever get a
    version in which every lesson can be sent. The draft is closed."""
    problems = content_problems(content)
    if problems:
        raise CourseProblem("; ".join(problems))
    number = (
        session.scalar(
            select(func.max(CourseVersion.number)).where(CourseVersion.course_id == course.id)
        )
        or 0
    ) + 1
    version = CourseVersion(
        course_id=course.id,
        number=number,
        content=content.to_json(),
        author=author[:320],
        operator_id=operator_id,
        note=(note or None) and note[:500],
        created_at=now,
    )
    session.add(version)
    session.flush()
    course.published_version_id = version.id
    discard_draft(course)
    return version


def create_course(
    session: Session, slug: str, title: str, now: datetime, **settings: object
) -> Course:
    """A new course, in draft, without lessons."""
    if not SLUG.fullmatch(slug) or len(slug) > 64:
        raise CourseProblem(
            "the address name (slug) may hold only lower-case letters, digits and single "
            "hyphens, e.g. 'anxiety-at-work'"
        )
    if session.scalar(select(Course.id).where(Course.slug == slug)) is not None:
        raise CourseProblem(f"a course with the address name '{slug}' already exists")
    if not title.strip():
        raise CourseProblem("the course needs a title")
    course = Course(slug=slug, title=title.strip()[:200], status=CourseStatus.DRAFT, created_at=now)
    for name, value in settings.items():
        setattr(course, name, value)
    session.add(course)
    session.flush()
    return course


def apply_meta(course: Course, meta: CourseMeta) -> None:
    """Take the settings of a ``course.yaml`` (the ones it sets)."""
    if meta.title:
        course.title = meta.title
    for name in ("description", "language", "weekdays_only", "send_hour", "booking_url"):
        if name in meta.model_fields_set:
            setattr(course, name, getattr(meta, name))


def import_folder(
    session: Session,
    directory: Path,
    *,
    author: str,
    now: datetime,
    slug: str | None = None,
    publish_status: bool = False,
) -> tuple[Course, CourseVersion]:
    """Import a course folder (course.coursefiles) as a new published version of the course
    it names (created if new). Any unreadable file or problem refuses the whole import."""
    folder = read_course_folder(directory)
    if folder.errors:
        raise CourseProblem(
            "; ".join(f"{name}: {reason}" for name, reason in sorted(folder.errors.items()))
        )
    slug = slug or folder.meta.slug
    if not slug:
        raise CourseProblem(f"name the course: 'slug:' in {COURSE_FILE}, or --slug")
    course = session.scalar(select(Course).where(Course.slug == slug))
    if course is None:
        course = create_course(session, slug, folder.meta.title or slug, now)
    apply_meta(course, folder.meta)
    if publish_status and course.status == CourseStatus.DRAFT:
        course.status = CourseStatus.PUBLISHED
    version = publish(
        session, course, folder.content, author=author, now=now, note=f"imported from {directory}"
    )
    return course, version


def seed_first_course(session: Session, directory: Path, now: datetime) -> CourseVersion | None:
    """Give course 1 its first version from ``directory`` if it has none yet (a new
    database, or one just upgraded from before courses existed; migration 0011)."""
    course = session.get(Course, 1)
    if course is None or course.published_version_id is not None:
        return None
    if session.scalar(select(CourseVersion.id).where(CourseVersion.course_id == 1)):
        return None
    folder = read_course_folder(directory)
    if folder.errors:
        raise CourseProblem(
            f"the first course's lessons in {directory} cannot be used: "
            + "; ".join(f"{name}: {reason}" for name, reason in sorted(folder.errors.items()))
        )
    apply_meta(course, folder.meta)
    if folder.meta.slug:
        course.slug = folder.meta.slug
    return publish(
        session,
        course,
        folder.content,
        author="course db upgrade",
        now=now,
        note=f"the first version, from {directory}",
    )
