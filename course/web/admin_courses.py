"""The course editor in the admin: courses and their settings; lessons and the emails after
the course, edited in a draft; previews drawn by the server; test sends; publishing, with
what it does to readers shown first; every version, its changes, and revert.

The routes are added to the admin blueprint (``course.web.admin.bp``), so they share its
sign-in, its one role check (``requires``) and its page context. The app factory imports
this module before it registers the blueprint.

=============================================  =========  =========  =====
route                                          assistant  therapist  owner
=============================================  =========  =========  =====
courses, a course, a lesson, an email, the     yes        yes        yes
versions and their changes, previews,
"send me a test"
create a course, change settings, edit, add,   no         yes        yes
move or remove lessons, publish, discard the
draft, revert to a version
=============================================  =========  =========  =====

A test send goes only to the signed-in operator's own address, like the one on the old
lesson pages, so assistants keep it.

**Drafts may have problems; versions never do.** Saving keeps whatever was typed, and the
page lists what is wrong next to the form (the same checks as ``course lessons check``,
unknown placeholders included); only publishing refuses a draft with problems
(``course.courses.publish``). A half-written lesson can then be saved and finished later,
and nothing typed is ever thrown away by a failed save, while readers still only get
versions in which every email can be sent.

A form that names a lesson the draft no longer has (a colleague removed it meanwhile, an
old tab) gets 409 with a message; a publish confirmed on a draft that has changed since
it was reviewed gets 409 too, so what is published is always what was looked at.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from flask import Response, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import BooleanField, IntegerField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from course.content import AfterCourseFields, CourseContent, compile_content, content_problems
from course.coursefiles import CourseMeta
from course.courses import (
    CourseProblem,
    PublishedCourse,
    course_view,
    create_course,
    discard_draft,
    draft_content,
    publish,
    published_content,
    save_draft,
    used_keys,
)
from course.editor import (
    AFTER_COURSE,
    AFTER_COURSE_LABELS,
    EditProblem,
    FileDiff,
    StaleEdit,
    add_lesson,
    course_overview,
    diff,
    impact,
    lesson_name,
    move_lesson,
    remove_lesson,
    set_after_course,
    update_lesson,
)
from course.extensions import state
from course.lessons import LessonFields, lesson_problems
from course.mail import DeliveryError
from course.models import Course, CourseStatus, CourseVersion, utcnow
from course.operators import Role
from course.render import sample_reader
from course.schedule import parse_hour
from course.testsend import send_test
from course.web.admin import bp, requires

#: The kinds of email a preview or a test send can show.
KINDS = ("lesson", *AFTER_COURSE)


class Refused(Exception):
    """A request the editor answers with a message and a status (400, 404, 409)."""

    def __init__(self, status: int, message: str, back: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.back = back


@bp.errorhandler(Refused)
def _refused(exc: Refused) -> ResponseReturnValue:
    return render_template(
        "web/admin/course_error.html", status=exc.status, message=exc.message, back=exc.back
    ), exc.status


def _course(session: Session, slug: str, *, lock: bool = False) -> Course:
    """The course named ``slug`` (404 if none). ``lock``: for a change, so two people's
    edits of one draft follow each other instead of one overwriting the other (PostgreSQL
    locks the row; SQLite's writers take turns anyway)."""
    query = select(Course).where(Course.slug == slug[:64])
    course = session.scalar(query.with_for_update() if lock else query)
    if course is None:
        raise Refused(404, f"There is no course “{slug[:64]}”.", url_for("admin.courses"))
    return course


def _back(slug: str) -> str:
    return url_for("admin.course_detail", slug=slug)


def _stale(slug: str) -> Refused:
    return Refused(
        409,
        "That lesson is no longer in the draft: someone removed it, or this page was "
        "opened before a change. Nothing was saved; please open the course again.",
        _back(slug),
    )


def fingerprint(content: CourseContent | LessonFields) -> str:
    """A short fingerprint of content or of one lesson, sent back by the forms: a publish
    names the draft that was reviewed, an edit the lesson as it was shown."""
    return hashlib.sha256(content.model_dump_json().encode()).hexdigest()[:16]


Change = Callable[[Session, Course, CourseContent], tuple[CourseContent, str]]


def _edit(slug: str, change: Change, message: str | None = None) -> ResponseReturnValue:
    """Apply ``change(session, course, draft) -> (content, redirect url)`` to the draft and
    save it; stale or bad edits are refused with a message."""
    with state().sessions() as session, session.begin():
        course = _course(session, slug, lock=True)
        try:
            content, target = change(session, course, draft_content(session, course))
        except StaleEdit:
            raise _stale(slug) from None
        except EditProblem as exc:
            raise Refused(400, f"Not changed: {exc}.", _back(slug)) from None
        save_draft(course, content, utcnow())
    if message:
        flash(message, "notice")
    return redirect(target, code=303)


# -- the list of courses ------------------------------------------------------------------


class NewCourseForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    slug = StringField(
        "Address name (for the signup page /c/…)", validators=[DataRequired(), Length(max=64)]
    )


def _courses_page(form: NewCourseForm, status: int = 200) -> ResponseReturnValue:
    with state().read_sessions() as session:
        rows = course_overview(session)
    return render_template("web/admin/courses.html", rows=rows, form=form), status


@bp.get("/courses")
@requires(Role.ASSISTANT)
def courses() -> ResponseReturnValue:
    """Every course: status, published version, readers, an open draft; a new course."""
    return _courses_page(NewCourseForm())


@bp.post("/courses")
@requires(Role.THERAPIST)
def course_create() -> ResponseReturnValue:
    """Create a course (in draft, without lessons: nobody can join it yet)."""
    form = NewCourseForm()
    if not form.validate_on_submit():
        return _courses_page(form, 400)
    slug = (form.slug.data or "").strip()
    try:
        with state().sessions() as session, session.begin():
            create_course(session, slug, form.title.data or "", utcnow())
    except CourseProblem as exc:
        form.slug.errors = [*form.slug.errors, f"Not created: {exc}."]
        return _courses_page(form, 400)
    flash("The course was created. Add its lessons, then publish it.", "notice")
    return redirect(url_for("admin.course_detail", slug=slug), code=303)


# -- one course ---------------------------------------------------------------------------


class SettingsForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField(
        "Description (on the signup page and in the list of courses)",
        validators=[Length(max=2000)],
    )
    language = StringField("Language code (e.g. en, de)", validators=[Length(max=16)])
    # <select>s drawn by the template: status from CourseStatus, the hour 0-23 or "".
    status = StringField("Status")
    send_hour = StringField("Send hour (the reader's own time zone)")
    booking_url = StringField(
        "Booking page (empty: the practice's own)", validators=[Length(max=2000)]
    )
    weekdays_only = BooleanField("Send lessons on weekdays only (Monday to Friday)")


@dataclass(frozen=True)
class LessonRow:
    position: int
    key: int
    name: str
    delay_days: int
    problems: list[str]
    published: bool  # in the published version
    was: str  # its fingerprint, for the buttons (see _as_shown)


def _course_page(
    session: Session, course: Course, form: SettingsForm | None = None, status: int = 200
) -> ResponseReturnValue:
    draft = draft_content(session, course)
    published = published_content(session, course)
    published_keys = {lesson.key for lesson in published.lessons}
    version = None
    if course.published_version_id is not None:
        version = session.get(CourseVersion, course.published_version_id)
    if form is None:
        form = SettingsForm(
            data={
                "title": course.title,
                "description": course.description,
                "language": course.language,
                "status": course.status,
                "send_hour": "" if course.send_hour is None else str(course.send_hour),
                "booking_url": course.booking_url or "",
                "weekdays_only": course.weekdays_only,
            }
        )
    lessons = [
        LessonRow(
            position=n,
            key=lesson.key,
            name=lesson_name(n, lesson),
            delay_days=lesson.delay_days,
            problems=lesson_problems(lesson),
            published=lesson.key in published_keys,
            was=fingerprint(lesson),
        )
        for n, lesson in enumerate(draft.lessons, start=1)
    ]
    return render_template(
        "web/admin/course.html",
        course=course,
        form=form,
        statuses=list(CourseStatus),
        lessons=lessons,
        draft=draft,
        problems=content_problems(draft),
        changed=draft != published,
        version=version,
        after=[
            (which, AFTER_COURSE_LABELS[which], getattr(draft, which)) for which in AFTER_COURSE
        ],
        default_hour=state().settings.send_hour,
    ), status


@bp.get("/courses/<slug>")
@requires(Role.ASSISTANT)
def course_detail(slug: str) -> ResponseReturnValue:
    """A course: its settings, the draft's lessons and emails with their problems, and the
    way to publish."""
    with state().read_sessions() as session:
        return _course_page(session, _course(session, slug))


@bp.post("/courses/<slug>/settings")
@requires(Role.THERAPIST)
def course_settings(slug: str) -> ResponseReturnValue:
    """Save the course's settings. They are not versioned: they apply at once."""
    form = SettingsForm()
    with state().sessions() as session, session.begin():
        course = _course(session, slug, lock=True)
        valid = form.validate_on_submit()
        status = CourseStatus(form.status.data) if form.status.data in set(CourseStatus) else None
        if status is None:
            form.status.errors = [*form.status.errors, "Choose draft, published or archived."]
        hour_text = (form.send_hour.data or "").strip()
        hour = parse_hour(hour_text)
        if hour_text and hour is None:
            form.send_hour.errors = [*form.send_hour.errors, "Choose an hour from 0 to 23."]
        meta = None
        try:
            # The same rules as a course.yaml (course.coursefiles.CourseMeta).
            meta = CourseMeta(
                title=(form.title.data or "").strip(),
                description=(form.description.data or "").strip(),
                language=(form.language.data or "").strip() or "en",
                weekdays_only=bool(form.weekdays_only.data),
                send_hour=hour,
                booking_url=(form.booking_url.data or "").strip() or None,
            )
        except ValidationError as exc:
            for error in exc.errors():
                name = str(error["loc"][0])
                field = getattr(form, name, form.title)
                field.errors = [*field.errors, _meta_message(name)]
        if not valid or meta is None or status is None or form.send_hour.errors:
            return _course_page(session, course, form, 400)
        course.title = meta.title or course.title
        course.description = meta.description
        course.language = meta.language
        course.weekdays_only = meta.weekdays_only
        course.send_hour = meta.send_hour
        course.booking_url = meta.booking_url
        course.status = status
        opened = status == CourseStatus.PUBLISHED and course.published_version_id is None
    flash("Settings saved; they apply at once.", "notice")
    if opened:
        flash(
            "The course is open for signups as soon as a version with lessons is published.",
            "alert",
        )
    return redirect(_back(slug), code=303)


def _meta_message(field: str) -> str:
    return {
        "language": "Use a language code such as en, de or pt-BR.",
        "booking_url": "Use a full address starting with https:// (or leave it empty).",
    }.get(field, "This value cannot be used.")


@bp.post("/courses/<slug>/lessons")
@requires(Role.THERAPIST)
def lesson_add(slug: str) -> ResponseReturnValue:
    """Add a lesson at the end of the draft, and open it."""
    title = request.form.get("title", "")[:200]

    def change(session: Session, course: Course, draft: CourseContent) -> tuple[CourseContent, str]:
        content, lesson = add_lesson(draft, used_keys(session, course.id), title)
        return content, url_for("admin.course_lesson", slug=slug, key=lesson.key)

    return _edit(slug, change, "Lesson added to the draft. Write it, then publish the course.")


@bp.post("/courses/<slug>/lessons/<int:key>/move")
@requires(Role.THERAPIST)
def lesson_move(slug: str, key: int) -> ResponseReturnValue:
    """Move a lesson one place up or down in the draft."""
    offset = {"up": -1, "down": 1}.get(request.form.get("direction", ""))
    if offset is None:
        raise Refused(400, "Move a lesson up or down.", _back(slug))

    def change(session: Session, course: Course, draft: CourseContent) -> tuple[CourseContent, str]:
        _as_shown(slug, draft, key)
        return move_lesson(draft, key, offset), _back(slug) + f"#lesson-{key}"

    return _edit(slug, change)


@bp.post("/courses/<slug>/lessons/<int:key>/remove")
@requires(Role.THERAPIST)
def lesson_remove(slug: str, key: int) -> ResponseReturnValue:
    """Remove a lesson from the draft (readers keep it until a version without it is
    published; "Discard the draft" brings it back)."""

    def change(session: Session, course: Course, draft: CourseContent) -> tuple[CourseContent, str]:
        _as_shown(slug, draft, key)
        return remove_lesson(draft, key), _back(slug)

    return _edit(slug, change, "Lesson removed from the draft.")


def _as_shown(slug: str, draft: CourseContent, key: int) -> None:
    """Refuse (409) a button pressed on a page that showed the lesson otherwise: removed
    since, changed by someone else, or a new lesson that took a removed one's key."""
    lesson = draft.lesson(key)
    if lesson is None:
        raise _stale(slug)
    if request.form.get("was") != fingerprint(lesson):
        raise Refused(
            409,
            "That lesson was changed since the page was opened (in another tab, or by a "
            "colleague). Nothing was changed; please look at the course again.",
            _back(slug),
        )


# -- one lesson ---------------------------------------------------------------------------


class LessonForm(FlaskForm):
    title = StringField("Title (the heading of the lesson)")
    subject = StringField("Subject line ({day} and {total} give “Day 3 of 5”)")
    preheader = StringField("Preview line (shown after the subject in the inbox)")
    delay_days = IntegerField(
        "Days after the previous lesson (the first lesson: after joining)",
        validators=[InputRequired(), NumberRange(min=0, max=365)],
    )
    body = TextAreaField("The lesson, in Markdown")
    exercise_title = StringField("Heading of the exercise section")
    booking_prompt = StringField("The sentence above the “Book a session” button")
    safety_note = BooleanField(
        "This lesson talks about a partner who may be dangerous: show the reader's "
        "domestic-abuse lines right after it"
    )
    slug = StringField(
        "File name in a course folder (optional)", validators=[Optional(), Length(max=80)]
    )


@dataclass(frozen=True)
class Preview:
    """A draft email as it would be sent: subject and text part (the HTML part comes from
    the preview route, in frames), or why it cannot be drawn."""

    subject: str = ""
    html: str = ""
    text: str = ""
    error: str | None = None


def _draft_view(course: Course, draft: CourseContent) -> PublishedCourse:
    # version_id None: the renderer never caches a draft (it changes with every edit).
    return course_view(course, compile_content(draft))


def _preview(course: PublishedCourse, kind: str, key: int) -> Preview:
    """Draw one email of ``course`` for the sample reader, as the sender would."""
    renderer = state().renderer
    reader = sample_reader(state().settings)  # as `course preview` shows it
    others = tuple(c for c in state().courses.current().open() if c.id != course.id)
    try:
        compiled = renderer.compiled(kind, key, course, reader.country, others=others)
    except LookupError:
        return Preview(error="It cannot be drawn until the problems listed here are fixed.")
    except Exception as exc:  # a template of the practice's own: a message, not a 500
        return Preview(error=f"It cannot be drawn: {exc}")
    html, text = compiled.fill(
        renderer.slot_values(compiled.slots, reader, kind, key, compiled.language)
    )
    return Preview(subject=compiled.subject, html=html, text=text)


def _lesson_page(
    session: Session, course: Course, key: int, form: LessonForm | None, status: int = 200
) -> ResponseReturnValue:
    draft = draft_content(session, course)
    lesson = draft.lesson(key)
    if lesson is None:
        raise Refused(404, "The draft has no such lesson.", _back(course.slug))
    position = next(n for n, ls in enumerate(draft.lessons, start=1) if ls.key == key)
    if form is None:
        form = LessonForm(data=lesson.model_dump())
    return render_template(
        "web/admin/course_lesson.html",
        course=course,
        lesson=lesson,
        position=position,
        total=len(draft.lessons),
        form=form,
        problems=lesson_problems(lesson),
        was=fingerprint(lesson),
        preview=_preview(_draft_view(course, draft), "lesson", key),
        kind="lesson",
        key=key,
        published=lesson == published_content(session, course).lesson(key),
    ), status


@bp.get("/courses/<slug>/lessons/<int:key>")
@requires(Role.ASSISTANT)
def course_lesson(slug: str, key: int) -> ResponseReturnValue:
    """A lesson of the draft: its form, its problems, and the email at phone and desktop
    width with its text part."""
    with state().read_sessions() as session:
        return _lesson_page(session, _course(session, slug), key, None)


@bp.post("/courses/<slug>/lessons/<int:key>")
@requires(Role.THERAPIST)
def course_lesson_save(slug: str, key: int) -> ResponseReturnValue:
    """Save a lesson into the draft (problems are shown, not refused: see the module
    docstring)."""
    form = LessonForm()
    with state().sessions() as session, session.begin():
        course = _course(session, slug, lock=True)
        draft = draft_content(session, course)
        lesson = draft.lesson(key)
        if lesson is None:
            raise _stale(slug)
        if request.form.get("was") != fingerprint(lesson):
            # Changed by someone else since the form was shown (or a new lesson has the
            # key of one removed before any publish). Nothing typed is lost: the form comes
            # back with it; saving again replaces the lesson deliberately.
            form.validate()
            form.form_errors.append(
                "This lesson was changed since you opened it (in another tab, or by a "
                "colleague). Your text below is not saved yet; the preview shows the saved "
                "lesson. Save again to replace it with yours."
            )
            return _lesson_page(session, course, key, form, 409)
        if not form.validate_on_submit():
            return _lesson_page(session, course, key, form, 400)
        changes = {
            "title": form.title.data or "",
            "subject": form.subject.data or "",
            "preheader": form.preheader.data or "",
            "delay_days": form.delay_days.data,
            # Browsers send CRLF from a textarea; lessons are stored with LF.
            "body": (form.body.data or "").replace("\r\n", "\n"),
            "exercise_title": form.exercise_title.data or "",
            "booking_prompt": form.booking_prompt.data or "",
            "safety_note": bool(form.safety_note.data),
            "slug": (form.slug.data or "").strip(),
        }
        try:
            content = update_lesson(draft, key, changes)
        except EditProblem as exc:
            form.form_errors.append(f"Not saved: {exc}.")
            return _lesson_page(session, course, key, form, 400)
        save_draft(course, content, utcnow())
        problems = lesson_problems(content.lesson(key) or content.lessons[0])
    if problems:
        flash(
            "Saved to the draft. It cannot be published until the problems below are fixed.",
            "alert",
        )
    else:
        flash("Saved to the draft. Readers get it once the course is published.", "notice")
    return redirect(url_for("admin.course_lesson", slug=slug, key=key), code=303)


# -- the emails after the course ------------------------------------------------------------


class AfterCourseForm(FlaskForm):
    subject = StringField("Subject line")
    days = IntegerField("Days after", validators=[InputRequired(), NumberRange(min=0, max=365)])
    body = TextAreaField("The email, in Markdown")


def _which(slug: str, which: str) -> str:
    if which not in AFTER_COURSE:
        raise Refused(404, "There is no such email.", _back(slug))
    return which


def _after_page(
    session: Session, course: Course, which: str, form: AfterCourseForm | None, status: int = 200
) -> ResponseReturnValue:
    draft = draft_content(session, course)
    fields: AfterCourseFields | None = getattr(draft, which)
    if form is None:
        defaults = AfterCourseFields(days=1 if which == "completion" else 14)
        form = AfterCourseForm(data=(fields or defaults).model_dump())
    compiled = compile_content(draft)
    problem = compiled.errors.get(f"{which} email")
    return render_template(
        "web/admin/course_after.html",
        course=course,
        which=which,
        label=AFTER_COURSE_LABELS[which],
        fields=fields,
        form=form,
        problems=problem.split("; ") if problem else [],
        preview=_preview(course_view(course, compiled), which, 0) if fields else None,
        kind=which,
        key=0,
    ), status


@bp.get("/courses/<slug>/after/<which>")
@requires(Role.ASSISTANT)
def course_after(slug: str, which: str) -> ResponseReturnValue:
    """The completion or follow-up email of the draft: its form and its preview."""
    with state().read_sessions() as session:
        return _after_page(session, _course(session, slug), _which(slug, which), None)


@bp.post("/courses/<slug>/after/<which>")
@requires(Role.THERAPIST)
def course_after_save(slug: str, which: str) -> ResponseReturnValue:
    """Save (or, with ``remove``, drop) the completion or follow-up email in the draft."""
    which = _which(slug, which)
    form = AfterCourseForm()
    removing = "remove" in request.form
    with state().sessions() as session, session.begin():
        course = _course(session, slug, lock=True)
        draft = draft_content(session, course)
        if removing:
            # The app's CSRF protection has checked the token of every POST already.
            content = set_after_course(draft, which, None)
        else:
            if not form.validate_on_submit():
                return _after_page(session, course, which, form, 400)
            content = set_after_course(
                draft,
                which,
                {
                    "subject": form.subject.data or "",
                    "body": (form.body.data or "").replace("\r\n", "\n"),
                    "days": form.days.data,
                },
            )
        save_draft(course, content, utcnow())
    label = AFTER_COURSE_LABELS[which].capitalize()
    if removing:
        flash(f"{label} removed from the draft.", "notice")
        return redirect(_back(slug), code=303)
    flash(f"{label} saved to the draft.", "notice")
    return redirect(url_for("admin.course_after", slug=slug, which=which), code=303)


# -- previews and test sends ----------------------------------------------------------------

#: The preview frame's own policy: it shows an email (inline style attributes, nothing
#: else), may be framed only by our own pages, and can neither run script nor send a form.
#: The frame is also sandboxed by the page that shows it.
PREVIEW_POLICY = (
    "default-src 'none'; style-src-attr 'unsafe-inline'; img-src 'self'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


@bp.get("/courses/<slug>/preview/<kind>/<int:key>")
@requires(Role.ASSISTANT)
def course_preview(slug: str, kind: str, key: int) -> ResponseReturnValue:
    """The HTML part of one email of the draft, as the sender would build it, for a
    sandboxed frame on the editor's pages."""
    if kind not in KINDS:
        raise Refused(404, "There is no such email.", _back(slug))
    with state().read_sessions() as session:
        course = _course(session, slug)
        draft = draft_content(session, course)
        view = _draft_view(course, draft)
    if kind == "lesson" and draft.lesson(key) is None:
        raise Refused(404, "The draft has no such lesson.", _back(slug))
    shown = _preview(view, kind, key)
    body = shown.html or render_template("web/admin/course_preview_error.html", preview=shown)
    response = Response(body, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.post("/courses/<slug>/test/<kind>/<int:key>")
@requires(Role.ASSISTANT)
def course_test(slug: str, kind: str, key: int) -> ResponseReturnValue:
    """Send one email of the draft to the signed-in operator's own address, now."""
    if kind not in KINDS:
        raise Refused(404, "There is no such email.", _back(slug))
    with state().read_sessions() as session:
        course = _course(session, slug)
        draft = draft_content(session, course)
        view = _draft_view(course, draft)
    back = (
        url_for("admin.course_lesson", slug=slug, key=key)
        if kind == "lesson"
        else url_for("admin.course_after", slug=slug, which=kind)
    )
    if kind == "lesson" and draft.lesson(key) is None:
        raise _stale(slug)
    settings = state().settings
    try:
        send_test(settings, state().renderer, view, key, current_user.email, utcnow(), kind)
    except LookupError:
        flash("Not sent: fix the problems listed here first.", "alert")
    except DeliveryError as exc:
        flash(f"The test could not be sent: {exc}", "alert")
    else:
        flash(f"A test was sent to {current_user.email}.", "notice")
    return redirect(back, code=303)


# -- publishing -----------------------------------------------------------------------------


def _publish_page(
    session: Session, course: Course, *, note: str = "", status: int = 200
) -> ResponseReturnValue:
    draft = draft_content(session, course)
    published = published_content(session, course)
    return render_template(
        "web/admin/course_publish.html",
        course=course,
        problems=content_problems(draft),
        changed=draft != published,
        impact=impact(session, course, published, draft, utcnow()),
        changes=diff(published, draft),
        fingerprint=fingerprint(draft),
        note=note,
        opens=course.status == CourseStatus.DRAFT,
    ), status


@bp.get("/courses/<slug>/publish")
@requires(Role.THERAPIST)
def course_publish_review(slug: str) -> ResponseReturnValue:
    """Before publishing: the problems, what each change does to readers, and the diff."""
    with state().read_sessions() as session:
        return _publish_page(session, _course(session, slug))


@bp.post("/courses/<slug>/publish")
@requires(Role.THERAPIST)
def course_publish(slug: str) -> ResponseReturnValue:
    """Publish the draft that was reviewed, as this operator."""
    note = request.form.get("note", "").strip()[:500]
    with state().sessions() as session, session.begin():
        course = _course(session, slug, lock=True)
        draft = draft_content(session, course)
        if request.form.get("draft") != fingerprint(draft):
            raise Refused(
                409,
                "The draft changed since you reviewed it (perhaps in another tab, or by a "
                "colleague). Nothing was published; please review it again.",
                url_for("admin.course_publish_review", slug=slug),
            )
        if draft == published_content(session, course):
            raise Refused(
                400, "Nothing to publish: the draft is the published version.", _back(slug)
            )
        try:
            version = publish(
                session,
                course,
                draft,
                author=current_user.email,
                now=utcnow(),
                operator_id=current_user.operator_id,
                note=note,
            )
        except CourseProblem:
            # Refused before anything was stored: the review page lists the problems.
            return _publish_page(session, course, note=note, status=400)
        opened = request.form.get("open") == "yes" and course.status == CourseStatus.DRAFT
        if opened:
            course.status = CourseStatus.PUBLISHED
        number = version.number
    message = f"Version {number} is published: readers get it from their next email."
    if opened:
        message += " The course is open for signups."
    flash(message, "notice")
    return redirect(_back(slug), code=303)


@bp.post("/courses/<slug>/discard")
@requires(Role.THERAPIST)
def course_discard(slug: str) -> ResponseReturnValue:
    """Throw the draft away: the editor shows the published version again."""
    with state().sessions() as session, session.begin():
        discard_draft(_course(session, slug, lock=True))
    flash("The draft was discarded.", "notice")
    return redirect(_back(slug), code=303)


# -- versions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    """Two contents side by side: what the versions page shows."""

    title: str
    changes: list[FileDiff]


def _compared(
    session: Session, course: Course, versions: list[CourseVersion], shown: str
) -> Compared | None:
    if not shown:
        return None
    if shown == "draft":
        if course.draft is None:
            raise Refused(404, "There is no open draft.", _back(course.slug))
        return Compared(
            "The draft against the published version",
            diff(published_content(session, course), draft_content(session, course)),
        )
    number = _version_number(shown)
    if number is None:
        raise Refused(400, "Name a version by its number.", _back(course.slug))
    by_number = {v.number: v for v in versions}
    version = by_number.get(number)
    if version is None:
        raise Refused(404, f"There is no version {number}.", _back(course.slug))
    before = by_number.get(number - 1)
    old = CourseContent.from_json(before.content) if before else CourseContent()
    what = f"against version {number - 1}" if before else "(the first version)"
    return Compared(f"Version {number} {what}", diff(old, CourseContent.from_json(version.content)))


def _version_number(text: str) -> int | None:
    """A version number from a query string (1-999999), or None."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6 or int(text) < 1:
        return None
    return int(text)


@bp.get("/courses/<slug>/versions")
@requires(Role.ASSISTANT)
def course_versions(slug: str) -> ResponseReturnValue:
    """Every published version (number, author, time, note) and, with ``?diff=N`` (or
    ``draft``), what it changed against the one before."""
    with state().read_sessions() as session:
        course = _course(session, slug)
        versions = list(
            session.scalars(
                select(CourseVersion)
                .where(CourseVersion.course_id == course.id)
                .order_by(CourseVersion.number.desc())
            )
        )
        compared = _compared(session, course, versions, request.args.get("diff", "")[:16])
        return render_template(
            "web/admin/course_versions.html",
            course=course,
            versions=versions,
            compared=compared,
        )


@bp.post("/courses/<slug>/versions/<int:number>/revert")
@requires(Role.THERAPIST)
def course_revert(slug: str, number: int) -> ResponseReturnValue:
    """Copy a version into the draft; publishing it is then the usual step."""
    with state().sessions() as session, session.begin():
        course = _course(session, slug, lock=True)
        text = session.scalar(
            select(CourseVersion.content).where(
                CourseVersion.course_id == course.id, CourseVersion.number == number
            )
        )
        if text is None:
            raise Refused(404, f"There is no version {number}.", _back(slug))
        save_draft(course, CourseContent.from_json(text), utcnow())
    flash(
        f"Version {number} was copied into the draft. Review it and publish it to make it "
        "the one readers get.",
        "notice",
    )
    return redirect(url_for("admin.course_publish_review", slug=slug), code=303)


@bp.after_request
def _courses_may_have_changed(response: Response) -> Response:
    """After a staff change, this process's signups see the courses as they are now
    (other processes within ``SIGNUP_CATALOGUE_SECONDS``, see CourseLibrary.recent)."""
    if request.method == "POST":
        state().courses.forget_recent()
    return response
