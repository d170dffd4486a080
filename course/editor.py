"""Editing a course in the admin, without Flask: changes to a draft, the difference between
two versions, and what publishing a draft would do to the readers on the course.

Every edit takes a :class:`CourseContent` and returns a new one (the models are frozen);
nothing here writes to the database. Storing the result is ``course.courses.save_draft``,
publishing it ``course.courses.publish``.

**What a live edit does to readers** (:func:`impact`) is worked out with the sender's own
rule, :meth:`course.lessons.LessonSet.next_for` over the lessons each reader has received
in their current run: their next lesson is the first in the course's order they have not
had. So the numbers the practice reads before publishing are the numbers the sender will
act on.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import yaml
from pydantic import ValidationError
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from course.content import MAX_LESSONS, AfterCourseFields, CourseContent
from course.coursefiles import AFTER_COURSE_FILES, lesson_file_name, lesson_file_text
from course.lessons import LessonFields, LessonSet
from course.models import (
    Course,
    CourseVersion,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    lesson_received,
)

AfterCourse = Literal["completion", "followup"]
AFTER_COURSE: tuple[AfterCourse, ...] = ("completion", "followup")
AFTER_COURSE_LABELS: dict[str, str] = {
    "completion": "completion email",
    "followup": "follow-up email",
}
#: The lesson fields a person edits (the key is the lesson's identity, never edited).
EDITABLE_FIELDS = tuple(name for name in LessonFields.model_fields if name != "key")
#: The fields whose change a reader sees in the email (the delay changes when, not what).
READER_FIELDS = tuple(name for name in EDITABLE_FIELDS if name not in ("delay_days", "slug"))


class EditProblem(ValueError):
    """An edit that cannot be made as asked (bad input); the message says why."""


class StaleEdit(LookupError):
    """The edit names a lesson the draft no longer has (removed meanwhile, in another tab
    or by a colleague)."""


# -- edits --------------------------------------------------------------------------------


def _lesson_index(content: CourseContent, key: int) -> int:
    for index, lesson in enumerate(content.lessons):
        if lesson.key == key:
            return index
    raise StaleEdit(f"the draft has no lesson with the key {key} (was it removed meanwhile?)")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors()
    )


def new_key(content: CourseContent, used: Iterable[int]) -> int:
    """The key of a new lesson: above every key of the draft and of every version ever
    published (``course.courses.used_keys``), so a reader's history of a removed lesson can
    never point at a new one."""
    return max({*used, *(lesson.key for lesson in content.lessons)}, default=0) + 1


def add_lesson(
    content: CourseContent, used: Iterable[int], title: str
) -> tuple[CourseContent, LessonFields]:
    """Add a lesson called ``title`` at the end; returns the content and the new lesson.

    It starts with a subject ("Day {day} of {total}: <title>") and no text, so it cannot
    be published until it is written."""
    title = " ".join(title.split())
    if not title:
        raise EditProblem("give the new lesson a title")
    if len(content.lessons) >= MAX_LESSONS:
        raise EditProblem(f"a course has at most {MAX_LESSONS} lessons")
    try:
        lesson = LessonFields(
            key=new_key(content, used),
            # The first lesson comes right after joining, each later one a day after the
            # one before (the same defaults as a lesson file without ``delay:``).
            delay_days=1 if content.lessons else 0,
            subject=f"Day {{day}} of {{total}}: {title}",
            title=title,
        )
    except ValidationError as exc:
        raise EditProblem(_validation_message(exc)) from None
    return content.model_copy(update={"lessons": (*content.lessons, lesson)}), lesson


def update_lesson(content: CourseContent, key: int, changes: Mapping[str, object]) -> CourseContent:
    """The lesson ``key`` with ``changes`` (field name -> value) applied and checked by the
    model (a delay out of range is refused here; problems of the text, such as an unknown
    placeholder, are left for :func:`course.content.content_problems` to report)."""
    index = _lesson_index(content, key)
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise EditProblem(f"unknown lesson field(s): {', '.join(sorted(unknown))}")
    # model_copy would skip validation: rebuild the lesson so every field is checked.
    try:
        lesson = LessonFields.model_validate(
            {**content.lessons[index].model_dump(), **changes, "key": key}
        )
    except ValidationError as exc:
        raise EditProblem(_validation_message(exc)) from None
    lessons = list(content.lessons)
    lessons[index] = lesson
    return content.model_copy(update={"lessons": tuple(lessons)})


def move_lesson(content: CourseContent, key: int, offset: int) -> CourseContent:
    """Move lesson ``key`` ``offset`` places (-1: up, 1: down). Moving the first lesson up
    or the last one down changes nothing."""
    index = _lesson_index(content, key)
    target = max(0, min(len(content.lessons) - 1, index + offset))
    if target == index:
        return content
    lessons = list(content.lessons)
    lessons.insert(target, lessons.pop(index))
    return content.model_copy(update={"lessons": tuple(lessons)})


def remove_lesson(content: CourseContent, key: int) -> CourseContent:
    """The content without lesson ``key``."""
    index = _lesson_index(content, key)
    lessons = content.lessons[:index] + content.lessons[index + 1 :]
    return content.model_copy(update={"lessons": lessons})


def set_after_course(
    content: CourseContent, which: str, fields: Mapping[str, object] | None
) -> CourseContent:
    """Set (``fields``: subject, body, days) or remove (None) the completion or follow-up
    email."""
    if which not in AFTER_COURSE:
        raise EditProblem(f"no email called {which!r}: use completion or followup")
    value = None
    if fields is not None:
        try:
            value = AfterCourseFields.model_validate(dict(fields))
        except ValidationError as exc:
            raise EditProblem(_validation_message(exc)) from None
    return content.model_copy(update={which: value})


# -- diff ---------------------------------------------------------------------------------

DiffKind = Literal["add", "del", "hunk", "ctx"]


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff, with its kind (the CSS class that colours it)."""

    kind: DiffKind
    text: str


@dataclass(frozen=True)
class FileDiff:
    """The change to one lesson (by key) or after-course email, as a unified diff of its
    file text (the form ``course courses export`` writes)."""

    name: str  # what a person reads: 'Lesson 3 "Self-esteem"' or 'completion email'
    status: Literal["added", "removed", "changed", "moved"]
    old_name: str | None  # file names, as in a course folder
    new_name: str | None
    lines: tuple[DiffLine, ...]
    note: str = ""  # e.g. "moved from place 4 to 2"

    def unified(self) -> str:
        """The diff as text."""
        head = f"--- {self.old_name or '/dev/null'}\n+++ {self.new_name or '/dev/null'}\n"
        return head + "".join(f"{line.text}\n" for line in self.lines)


def after_course_file_text(fields: AfterCourseFields) -> str:
    """The completion or follow-up email as its file in a course folder holds it (front
    matter ``subject`` and ``days``, then the Markdown), for diffs."""
    head = yaml.safe_dump(
        {"subject": fields.subject, "days": fields.days},
        sort_keys=False,
        allow_unicode=True,
        width=10_000,
    )
    return f"---\n{head}---\n\n{fields.body.strip()}\n"


def _lesson_text(lesson: LessonFields) -> str:
    # Always written as a later lesson, so moving a lesson to or from the first place does
    # not show as a change of its text (the delay line appears whenever it is not 1).
    return lesson_file_text(lesson, first=False)


def _unified(old: str, new: str) -> tuple[DiffLine, ...]:
    lines = []
    raw = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    for text in raw:
        if text.startswith(("---", "+++")):
            continue  # the file names are in FileDiff
        kind: DiffKind = (
            "hunk"
            if text.startswith("@@")
            else "add"
            if text.startswith("+")
            else "del"
            if text.startswith("-")
            else "ctx"
        )
        lines.append(DiffLine(kind, text))
    return tuple(lines)


def lesson_name(position: int | None, lesson: LessonFields) -> str:
    """How the editor names a lesson: its place and title."""
    title = lesson.title.strip() or lesson.subject.strip() or "untitled"
    return f"Lesson {position} “{title}”" if position else f"“{title}”"


def moved_keys(old: Sequence[int], new: Sequence[int]) -> set[int]:
    """The lessons in both orders that changed places: all but a longest run that kept
    its relative order (moving one lesson is one move, not a move of all after it)."""
    where = {key: i for i, key in enumerate(old)}
    kept = [key for key in new if key in where]
    length = [1] * len(kept)
    before = [-1] * len(kept)
    for i, key in enumerate(kept):
        for j in range(i):
            if where[kept[j]] < where[key] and length[j] + 1 > length[i]:
                length[i], before[i] = length[j] + 1, j
    stay: set[int] = set()
    # Of equally long runs, the one that ends last stays: when two lessons swap, the one
    # that moved earlier is the one named as moved.
    i = max(reversed(range(len(kept))), key=length.__getitem__, default=-1)
    while i >= 0:
        stay.add(kept[i])
        i = before[i]
    return set(kept) - stay


def diff(old: CourseContent, new: CourseContent) -> list[FileDiff]:
    """What changed from ``old`` to ``new``: one entry per lesson (matched by key, in the
    new order, removed ones after) and per after-course email that differs."""
    found: list[FileDiff] = []
    old_at = {lesson.key: (n, lesson) for n, lesson in enumerate(old.lessons, start=1)}
    new_keys = {lesson.key for lesson in new.lessons}
    moved = moved_keys([ls.key for ls in old.lessons], [ls.key for ls in new.lessons])
    for n, lesson in enumerate(new.lessons, start=1):
        new_name = lesson_file_name(n, lesson)
        was = old_at.get(lesson.key)
        if was is None:
            found.append(
                FileDiff(
                    lesson_name(n, lesson),
                    "added",
                    None,
                    new_name,
                    _unified("", _lesson_text(lesson)),
                )
            )
            continue
        old_n, before = was
        lines = _unified(_lesson_text(before), _lesson_text(lesson))
        is_moved = lesson.key in moved
        if not lines and not is_moved:
            continue
        found.append(
            FileDiff(
                lesson_name(n, lesson),
                "changed" if lines else "moved",
                lesson_file_name(old_n, before),
                new_name,
                lines,
                note=f"moved from place {old_n} to {n}" if is_moved else "",
            )
        )
    for old_n, lesson in enumerate(old.lessons, start=1):
        if lesson.key not in new_keys:
            found.append(
                FileDiff(
                    lesson_name(None, lesson),
                    "removed",
                    lesson_file_name(old_n, lesson),
                    None,
                    _unified(_lesson_text(lesson), ""),
                    note=f"was lesson {old_n}",
                )
            )
    for which in AFTER_COURSE:
        before_after: AfterCourseFields | None = getattr(old, which)
        after: AfterCourseFields | None = getattr(new, which)
        if before_after == after:
            continue
        old_text = after_course_file_text(before_after) if before_after else ""
        new_text = after_course_file_text(after) if after else ""
        status: Literal["added", "removed", "changed"] = (
            "added" if before_after is None else "removed" if after is None else "changed"
        )
        file_name = AFTER_COURSE_FILES[which]
        found.append(
            FileDiff(
                AFTER_COURSE_LABELS[which].capitalize(),
                status,
                file_name if before_after else None,
                file_name if after else None,
                _unified(old_text, new_text),
            )
        )
    return found


def diff_text(old: CourseContent, new: CourseContent) -> str:
    """The whole difference as one unified diff (empty when nothing changed)."""
    return "".join(entry.unified() for entry in diff(old, new))


# -- who a change reaches -----------------------------------------------------------------

#: The enrolments a change to the lessons can reach: on the course now, running or paused
#: (a reader taking a break is active, with ``snoozed_until`` set).
ON_THE_COURSE = (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED)


@dataclass(frozen=True)
class ReaderPlace:
    """Where one enrolment is in the course: what it has received in its current run, and
    what is queued for it."""

    status: str
    received: frozenset[int]
    queued_lesson: int | None = None
    queued_after: str | None = None  # "completion" or "followup", for finished readers
    snoozed: bool = False

    @property
    def on_course(self) -> bool:
        return self.status in ON_THE_COURSE


def reader_places(session: Session, course_id: int, now: datetime) -> list[ReaderPlace]:
    """Every enrolment on the course that an edit can still reach: on the course now, or
    finished with an after-course email still queued (three queries, whatever the number
    of readers)."""
    statuses = (*ON_THE_COURSE, SubscriberStatus.COMPLETED)
    readers = {
        sid: (status, snoozed_until)
        for sid, status, snoozed_until in session.execute(
            select(Subscriber.id, Subscriber.status, Subscriber.snoozed_until).where(
                Subscriber.course_id == course_id, Subscriber.status.in_(statuses)
            )
        )
    }
    current_run = (
        select(Delivery.subscriber_id, Delivery.kind, Delivery.number)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(
            Subscriber.course_id == course_id,
            Subscriber.status.in_(statuses),
            Delivery.run == Subscriber.run,
        )
    )
    received: dict[int, set[int]] = {sid: set() for sid in readers}
    # The sender's own rule of "received" (course.models.lesson_received).
    for sid, _kind, number in session.execute(current_run.where(lesson_received())):
        received[sid].add(number)
    queued_lesson: dict[int, int] = {}
    queued_after: dict[int, str] = {}
    for sid, kind, number in session.execute(
        current_run.where(Delivery.status == DeliveryStatus.QUEUED)
    ):
        if kind == DeliveryKind.LESSON:
            queued_lesson[sid] = number
        elif kind in AFTER_COURSE:
            queued_after[sid] = kind
    places = []
    for sid, (status, snoozed_until) in readers.items():
        if status == SubscriberStatus.COMPLETED and sid not in queued_after:
            continue  # finished, nothing more on its way: no edit reaches them
        places.append(
            ReaderPlace(
                status=status,
                received=frozenset(received[sid]),
                queued_lesson=queued_lesson.get(sid),
                queued_after=queued_after.get(sid),
                snoozed=snoozed_until is not None and snoozed_until > now,
            )
        )
    return places


@dataclass(frozen=True)
class ImpactLine:
    """One change and what it does to readers, in plain words."""

    change: str  # "added", "removed", "moved", "changed", "delay", "after", "settings"
    text: str
    readers: int


@dataclass(frozen=True)
class Impact:
    """What publishing a draft does: who is on the course, and each change's effect."""

    on_course: int
    paused: int
    snoozed: int
    lines: tuple[ImpactLine, ...]

    @property
    def summary(self) -> str:
        """Who is on the course now."""
        if not self.on_course:
            return "Nobody is on this course now: publishing changes what future readers get."
        extra = []
        if self.paused:
            extra.append(f"{self.paused} paused")
        if self.snoozed:
            extra.append(f"{self.snoozed} taking a break")
        detail = f" ({', '.join(extra)})" if extra else ""
        return f"{_readers(self.on_course)} on this course now{detail}."


def _readers(count: int) -> str:
    return f"{count} reader{'' if count == 1 else 's'}"


def _order(content: CourseContent) -> LessonSet:
    # The order alone is what next_for needs: the sender's rule on this content's order.
    return LessonSet(order=tuple(lesson.key for lesson in content.lessons))


def _title(content: CourseContent, key: int | None) -> str:
    if key is None:
        return "the end of the course"
    lesson = content.lesson(key)
    return f"“{lesson.title.strip() or lesson.subject.strip() or 'untitled'}”" if lesson else "?"


def impact_of(places: Sequence[ReaderPlace], old: CourseContent, new: CourseContent) -> Impact:
    """The effect of replacing ``old`` by ``new`` on readers at ``places`` (no database:
    :func:`impact` loads the places)."""
    on = [p for p in places if p.on_course]
    lines: list[ImpactLine] = []
    old_keys = [ls.key for ls in old.lessons]
    new_keys = [ls.key for ls in new.lessons]
    old_set, new_set = set(old_keys), set(new_keys)
    new_order = _order(new)

    for n, lesson in enumerate(new.lessons, start=1):
        if lesson.key in old_set:
            continue
        name = _title(new, lesson.key)
        if not on:
            text = f"Lesson {name} added as lesson {n}: nobody is on the course now."
            lines.append(ImpactLine("added", text, 0))
            continue
        # A new lesson's key is new (course.courses.used_keys), but a revert can bring back
        # a lesson some readers had: they do not get it again.
        missing = [p for p in on if lesson.key not in p.received]
        first = sum(1 for p in missing if new_order.next_for(p.received) == lesson.key)
        at_end = not any(k in old_set for k in new_keys[n:])
        if at_end:
            text = (
                f"Lesson {name} added at the end: {_readers(len(missing))} still on the course "
                "will get it after their current last lesson"
            )
            if first:
                text += f" ({first} of them have had every other lesson and get it next)"
        else:
            text = (
                f"Lesson {name} added as lesson {n}: {_readers(len(missing))} still on the "
                f"course will get it; for {first} of them it is the next lesson (they are "
                "past that place already), the others get it when they reach it"
            )
        had = len(on) - len(missing)
        if had:
            text += f"; {had} who had it in an earlier version will not get it again"
        if at_end:
            text += ". Readers who finished the course do not get it"
        lines.append(ImpactLine("added", text + ".", len(missing)))

    for lesson in old.lessons:
        if lesson.key in new_set:
            continue
        name = _title(old, lesson.key)
        missing = [p for p in on if lesson.key not in p.received]
        had = len(on) - len(missing)
        text = (
            f"Lesson {name} removed: {_readers(len(missing))} who have not had it yet "
            "will not get it"
        )
        if had:
            text += f"; {had} who had it will keep it"
        waiting = [p for p in missing if p.queued_lesson == lesson.key]
        if waiting:
            instead = Counter(new_order.next_for(p.received) for p in waiting)
            parts = [
                f"for {count}, {_title(new, key)} comes instead, at the same time"
                if key is not None
                else f"for {count}, the course ends there (every other lesson is behind them)"
                for key, count in instead.items()
            ]
            text += f". It was the next lesson of {len(waiting)}: " + "; ".join(parts)
        lines.append(ImpactLine("removed", text + ". Nobody gets a lesson twice.", len(missing)))

    kept_old = [k for k in old_keys if k in new_set]
    kept_new = [k for k in new_keys if k in old_set]
    if kept_old != kept_new:
        moved = moved_keys(kept_old, kept_new)
        names = ", ".join(
            f"{_title(new, k)} now lesson {new_keys.index(k) + 1}" for k in new_keys if k in moved
        )
        # The reorder alone, with the same lessons on both sides: whose next lesson moves.
        before, after = LessonSet(order=tuple(kept_old)), LessonSet(order=tuple(kept_new))
        changed = Counter(
            (before.next_for(p.received), after.next_for(p.received))
            for p in on
            if before.next_for(p.received) != after.next_for(p.received)
        )
        count = sum(changed.values())
        text = f"Lessons reordered ({names}): "
        if count:
            text += (
                f"the next lesson of {_readers(count)} changes: "
                + "; ".join(
                    f"for {c}, it becomes {_title(new, b)} instead of {_title(old, a)}"
                    for (a, b), c in changed.items()
                )
                + ". Nobody gets a lesson twice, and a lesson a reader has passed by "
                "moving comes next for them"
            )
        else:
            text += "no reader's next lesson changes"
        lines.append(ImpactLine("moved", text + ".", count))

    for lesson in new.lessons:
        before_lesson = old.lesson(lesson.key)
        if before_lesson is None:
            continue
        name = _title(new, lesson.key)
        text_fields = [f for f in READER_FIELDS if getattr(lesson, f) != getattr(before_lesson, f)]
        missing = [p for p in on if lesson.key not in p.received]
        had = len(on) - len(missing)
        if text_fields:
            text = (
                f"Text of {name} changed: {_readers(len(missing))} who have not had it yet "
                "will get the new text"
            )
            if had:
                text += (
                    f"; {had} who had it will keep the version they got (its “read it again” "
                    "page shows the new text)"
                )
            lines.append(ImpactLine("changed", text + ".", len(missing)))
        if lesson.delay_days != before_lesson.delay_days:
            queued = sum(1 for p in missing if p.queued_lesson == lesson.key)
            later = len(missing) - queued
            text = (
                f"Delay of {name} changed from {before_lesson.delay_days} to "
                f"{lesson.delay_days} day{'' if lesson.delay_days == 1 else 's'}: "
                f"{_readers(later)} who have not had it yet will get it on the new schedule"
            )
            if queued:
                text += f"; for {queued} it is already due on a set day, which stays"
            lines.append(ImpactLine("delay", text + ".", later))

    for which in AFTER_COURSE:
        before_email: AfterCourseFields | None = getattr(old, which)
        after_email: AfterCourseFields | None = getattr(new, which)
        if before_email == after_email:
            continue
        label = AFTER_COURSE_LABELS[which]
        queued = sum(1 for p in places if p.queued_after == which)
        if after_email is None:
            text = f"The {label} removed: {_readers(len(on))} on the course will not get it"
            if queued:
                text += f"; {queued} who finished have it queued: it is not sent to them"
        else:
            verb = "added" if before_email is None else "changed"
            text = f"The {label} {verb}: {_readers(len(on))} on the course will get it"
            if queued:
                text += f", and {queued} who finished and have it queued get the new text"
        lines.append(ImpactLine("after", text + ".", len(on) + queued))

    return Impact(
        on_course=len(on),
        paused=sum(1 for p in on if p.status == SubscriberStatus.PAUSED),
        snoozed=sum(1 for p in on if p.snoozed),
        lines=tuple(lines),
    )


def impact(
    session: Session, course: Course, published: CourseContent, draft: CourseContent, now: datetime
) -> Impact:
    """What publishing ``draft`` over ``published`` does to the readers of ``course`` now,
    in plain words, change by change (see the module docstring)."""
    return impact_of(reader_places(session, course.id, now), published, draft)


# -- the list of courses ------------------------------------------------------------------


@dataclass(frozen=True)
class CourseRow:
    """One course in the admin's list."""

    slug: str
    title: str
    status: str
    version: int | None  # the published version's number
    lessons: int  # in the published version
    on_course: int  # readers on the course now (running or paused)
    confirmed: int  # everyone who ever confirmed, finished and left included
    draft_open: bool
    draft_updated_at: datetime | None


def course_overview(session: Session) -> list[CourseRow]:
    """Every course, oldest first, with its published version and readers."""
    readers = {
        course_id: (int(on or 0), int(total))
        for course_id, on, total in session.execute(
            select(
                Subscriber.course_id,
                func.sum(case((Subscriber.status.in_(ON_THE_COURSE), 1), else_=0)),
                func.count(),
            )
            # A pending signup has not confirmed: not a reader yet.
            .where(Subscriber.status != SubscriberStatus.PENDING)
            .group_by(Subscriber.course_id)
        )
    }
    rows = []
    for course, number, content in session.execute(
        select(Course, CourseVersion.number, CourseVersion.content)
        .outerjoin(CourseVersion, CourseVersion.id == Course.published_version_id)
        .order_by(Course.id)
    ):
        on, total = readers.get(course.id, (0, 0))
        rows.append(
            CourseRow(
                slug=course.slug,
                title=course.title,
                status=course.status,
                version=number,
                lessons=len(CourseContent.from_json(content).lessons) if content else 0,
                on_course=on,
                confirmed=total,
                draft_open=course.draft is not None,
                draft_updated_at=course.draft_updated_at,
            )
        )
    return rows
