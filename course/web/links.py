"""The reader's one-click links from the emails, and their progress page.

Every URL carries a signed token (``course.tokens``) naming the subscriber by public id.
A token is the reader's key to these pages, so the forms here need no CSRF token: a
forged request would need the signed token itself. See ``course.progress`` for how a mail
scanner's prefetch is kept from recording anything.

**A link opens only what it names.** Each token has one purpose, and the page it opens
carries only tokens of that purpose (or of a lesser one), never a way to a wider page:

- ``unsubscribe`` (also in the ``List-Unsubscribe`` header, which every relay sees and
  mailbox providers POST to): unsubscribe, or pause instead. Nothing else.
- ``pause``: pause and resume. Nothing else.
- ``done``, ``checkin``, ``view``, ``book``: that one lesson's answers and pages. The
  check-in page takes a new private note, but never shows the one saved before.
- ``progress`` (``/me/...``, the "My progress" link in the body of lesson emails, never in
  a header): the reader's own page for that course, the only one that shows notes, and
  that exports or erases their data.
- ``join`` (offered after the last lesson): a page about another course with one button
  that starts it.

Every token names one enrolment (a person on one course). Lesson 0 is the follow-up after
the course: its answers (``checkin``) and its booking link (``book``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, Response, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from course.bookings import booking_link_params
from course.care import RiskPhrases, risk_phrases
from course.courses import PublishedCourse, lesson_in_history
from course.crisis import countries
from course.extensions import state
from course.i18n import (
    N_,
    country_name,
    gettext,
    html_lang,
    local_datetime,
    page_language,
    setting_text,
    use_course_language,
    zone_groups_in,
)
from course.models import (
    CheckIn,
    Delivery,
    EventKind,
    LessonProgress,
    Subscriber,
    SubscriberStatus,
    lesson_received,
    utcnow,
)
from course.privacy import erase, export_data
from course.progress import (
    MAX_NOTE,
    check_in,
    mark_done,
    record_event,
    record_link_click,
    save_note,
    scan_in_progress,
)
from course.render import add_query
from course.schedule import parse_hour, parse_lesson_number
from course.subscriptions import (
    by_public_id,
    enrolments_of,
    find_by_email,
    in_current_run,
    join_course,
    next_queued_lesson,
    pause,
    resume,
    rhythm_of,
    set_schedule,
    snooze,
    start_run,
    unsubscribe,
    unsubscribe_everywhere,
)
from course.timezones import may_choose
from course.tokens import InvalidToken
from course.web.errors import error_response

bp = Blueprint("links", __name__)


def init_app(app: Flask) -> None:
    """Register the reader's link pages.

    The token in the URL is the credential, so a cross-site request cannot forge one and
    CSRF tokens are not needed (RFC 8058 one-click unsubscribe must work without cookies or
    tokens anyway).
    """
    from course.extensions import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)


# Translated where they are shown (course.web.errors.error_response).
BAD_LINK = N_(
    "This link isn't valid. It may have been copied only in part. Please use the link "
    "exactly as it appears in your email."
)
GONE = N_("We couldn't find your course. Your data may have been deleted.")


class LinkError(Exception):
    """A link that cannot be used; carries the response to send."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


@bp.errorhandler(LinkError)
def _link_error(exc: LinkError) -> ResponseReturnValue:
    return error_response(exc.status, exc.message)


#: The purposes whose lesson may be 0: the follow-up after the course.
_AFTER_COURSE = ("checkin", "book")


def _resolve(
    session: Session, purpose: str, token: str, with_lesson: bool
) -> tuple[Subscriber, int]:
    """The subscriber (and lesson key) a token points at, or a :class:`LinkError`."""
    try:
        payload = state().signer.loads(purpose, token)
    except InvalidToken:
        raise LinkError(400, BAD_LINK) from None
    lesson = 0
    if with_lesson:
        lowest = 0 if purpose in _AFTER_COURSE else 1
        if len(payload) < 2 or not isinstance(payload[1], int) or payload[1] < lowest:
            raise LinkError(400, BAD_LINK)
        lesson = payload[1]
    subscriber = by_public_id(session, payload[0])
    if subscriber is None:
        raise LinkError(404, GONE)
    g.reader_country = subscriber.country  # the crisis resources this reader's pages show
    # The reader's pages speak the language of the course they came from.
    use_course_language(state().courses.current().get(subscriber.course_id))
    return subscriber, lesson


def _answer(token: str) -> CheckIn:
    payload = state().signer.loads("checkin", token)
    try:
        return CheckIn(payload[2])
    except (IndexError, ValueError):
        raise LinkError(400, BAD_LINK) from None


def _lesson_tokens(subscriber: Subscriber, lesson: int) -> dict[str, str]:
    """Tokens for one lesson's pages: the same links as in that lesson's email, no more."""
    signer = state().signer
    pid = subscriber.public_id
    tokens = {
        "done": signer.dumps("done", pid, lesson),
        "view": signer.dumps("view", pid, lesson),
        "book": signer.dumps("book", pid, lesson),
    }
    for answer in CheckIn:
        tokens[f"checkin_{answer.value}"] = signer.dumps("checkin", pid, lesson, answer.value)
    return tokens


def _progress_tokens(subscriber: Subscriber) -> dict[str, str]:
    """Tokens for the reader's own page, which may do everything."""
    signer = state().signer
    pid = subscriber.public_id
    return {
        "progress": signer.dumps("progress", pid),
        "unsubscribe": signer.dumps("unsubscribe", pid),
        "pause": signer.dumps("pause", pid),
    }


def _was_sent(session: Session, subscriber: Subscriber, lesson: int) -> bool:
    return (
        session.scalar(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber.id,
                lesson_received(),
                Delivery.number == lesson,
            )
        )
        is not None
    )


def _progress(session: Session, subscriber: Subscriber, lesson: int) -> LessonProgress | None:
    return session.scalars(
        select(LessonProgress).where(
            LessonProgress.subscriber_id == subscriber.id,
            LessonProgress.lesson == lesson,
            LessonProgress.run == subscriber.run,
        )
    ).first()


def note_too_long() -> str:
    """What a reader reads when a note is longer than :data:`MAX_NOTE`."""
    return gettext("Please keep the note under %(max)s characters.", max=MAX_NOTE)


def _phrases() -> RiskPhrases:
    """The practice's risk phrases (course.care): a note that matches one reaches a person."""
    return risk_phrases(state().settings.risk_phrases_file)


def _course(subscriber: Subscriber) -> PublishedCourse:
    """The course this enrolment is on (as published now)."""
    found = state().courses.current().get(subscriber.course_id)
    if found is None:
        raise LinkError(404, GONE)
    return found


def _lesson_title(subscriber: Subscriber, lesson: int) -> str:
    course = _course(subscriber)
    if lesson == 0:
        return gettext("Your follow-up")
    found = course.content.get(lesson)
    return found.title if found else gettext("Lesson %(number)s", number=lesson)


def _records() -> bool:
    """HEAD requests (link checkers, previews) never record anything."""
    return request.method != "HEAD"


# -- done and check-in ---------------------------------------------------------------------


@bp.route("/done/<token>", methods=["GET", "POST"])
def done(token: str) -> ResponseReturnValue:
    """'I did today's exercise'."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, lesson = _resolve(session, "done", token, with_lesson=True)
        now = utcnow()
        if request.method == "POST":
            mark_done(session, subscriber, lesson, now)
            recorded = True
        elif _records():
            recorded = record_link_click(session, subscriber, lesson, EventKind.DONE, now)
        else:
            recorded = False
        row = _progress(session, subscriber, lesson)
        return render_template(
            "web/done.html",
            recorded=recorded or bool(row and row.done_at),
            lesson=lesson,
            title=_lesson_title(subscriber, lesson),
            progress=row,
            answers=list(CheckIn),
            tokens=_lesson_tokens(subscriber, lesson),
        )


@bp.route("/checkin/<token>", methods=["GET", "POST"])
def checkin(token: str) -> ResponseReturnValue:
    """'How did today's lesson land?': one click records it; the page takes an optional note."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, lesson = _resolve(session, "checkin", token, with_lesson=True)
        now = utcnow()
        errors: dict[str, str] = {}
        saved = False
        if request.method == "POST":
            answer_raw = request.form.get("answer")
            note = request.form.get("note")
            if answer_raw is not None:
                try:
                    check_in(session, subscriber, lesson, CheckIn(answer_raw), now)
                    saved = True
                except ValueError:
                    errors["answer"] = gettext("Please choose one of the three answers.")
            # An empty note here changes nothing: this page never shows the note saved
            # before, so it must not delete it either (the progress page can).
            if note is not None and note.replace("\x00", "").strip():
                note = note.replace("\x00", "").strip()
                if len(note) > MAX_NOTE:
                    errors["note"] = note_too_long()
                else:
                    save_note(session, subscriber, lesson, note, now, _phrases())
                    saved = True
            if errors:
                saved = False
        elif _records():
            record_link_click(
                session, subscriber, lesson, EventKind.CHECKIN, now, _answer(token).value
            )
        row = _progress(session, subscriber, lesson)
        scanned = scan_in_progress(session, subscriber, lesson, now)
        return (
            render_template(
                "web/checkin.html",
                lesson=lesson,
                title=_lesson_title(subscriber, lesson),
                progress=row,
                current=CheckIn(row.checkin) if row and row.checkin else None,
                scanned=scanned and not (row and row.checkin),
                saved=saved,
                errors=errors,
                answers=list(CheckIn),
                max_note=MAX_NOTE,
                tokens=_lesson_tokens(subscriber, lesson),
                token=token,
            ),
            400 if errors else 200,
        )


# -- view in browser and booking -----------------------------------------------------------


@bp.get("/view/<token>")
def view(token: str) -> ResponseReturnValue:
    """The lesson as a web page (only lessons this reader has received)."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, lesson = _resolve(session, "view", token, with_lesson=True)
        found = lesson_in_history(session, _course(subscriber), lesson)
        if found is None or not _was_sent(session, subscriber, lesson):
            raise LinkError(404, gettext("This lesson isn't available yet."))
        if _records():
            record_link_click(session, subscriber, lesson, EventKind.VIEW, utcnow())
        return render_template(
            "web/lesson.html",
            lesson=found,
            course_title=_course(subscriber).title,
            name=subscriber.name,
            answers=list(CheckIn),
            tokens=_lesson_tokens(subscriber, lesson),
        )


@bp.get("/book/<token>")
def book(token: str) -> ResponseReturnValue:
    """Record a booking click for the lesson, then go to the practice's booking page."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, lesson = _resolve(session, "book", token, with_lesson=True)
        if _records():
            record_link_click(session, subscriber, lesson, EventKind.BOOK, utcnow())
        joined = _course(subscriber)
        # The reader's reference for the booking webhooks, and the prefill if it is on.
        extra = booking_link_params(subscriber, course.settings, course.signer)
    campaign = f"{joined.slug}-lesson-{lesson}" if lesson else f"{joined.slug}-after"
    if joined.id == 1 and lesson:
        campaign = f"lesson-{lesson}"  # the first course keeps the campaign names it had
    target = add_query(
        joined.booking_url or course.settings.booking_url,
        {
            "utm_source": "course",
            "utm_medium": "email",
            "utm_campaign": campaign,
            **extra,
        },
    )
    return redirect(target, code=302)


# -- pause and unsubscribe -----------------------------------------------------------------


@bp.route("/pause/<token>", methods=["GET", "POST"])
def pause_link(token: str) -> ResponseReturnValue:
    """'Pause the course': GET asks, POST pauses or resumes (a prefetch changes nothing)."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "pause", token, with_lesson=False)
        changed = None
        if request.method == "POST":
            if request.form.get("action") == "keep":
                changed = "kept"
            elif request.form.get("action") == "resume":
                ok = resume(
                    session,
                    subscriber,
                    utcnow(),
                    settings=course.settings,
                    course=_course(subscriber),
                )
                changed = "resumed" if ok else None
            else:
                changed = "paused" if pause(session, subscriber, utcnow()) else None
        return render_template(
            "web/pause.html",
            status=subscriber.status,
            statuses=SubscriberStatus,
            changed=changed,
            token=token,
        )


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe_link(token: str) -> ResponseReturnValue:
    """GET asks (offering a pause first); POST unsubscribes from this course, also RFC
    8058 one-click from mail apps; the page also offers to leave every course. This link
    travels in a mail header, so its page leads nowhere else."""
    with state().sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "unsubscribe", token, with_lesson=False)
        paused_now = kept = left_all = False
        if request.method == "POST":
            # Only an explicit "unsubscribe" (or a mail app's RFC 8058 one-click POST, which
            # carries no action, and leaves the course the mail belongs to) unsubscribes; the
            # gentler choices come first on the page.
            action = request.form.get("action")
            if action == "keep":
                kept = True
            elif action == "pause":
                paused_now = pause(session, subscriber, utcnow(), via="page")
            elif action == "all":
                unsubscribe_everywhere(session, subscriber, utcnow(), via="page")
                left_all = True
            else:
                one_click = request.form.get("List-Unsubscribe") == "One-Click"
                via = "one-click" if one_click else "page"
                unsubscribe(session, subscriber, utcnow(), via=via)
        others = [
            e
            for e in enrolments_of(session, subscriber.email)
            if e.id != subscriber.id
            and e.status
            in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED, SubscriberStatus.PENDING)
        ]
        return render_template(
            "web/unsubscribe.html",
            status=subscriber.status,
            statuses=SubscriberStatus,
            paused_now=paused_now,
            kept=kept,
            left_all=left_all,
            other_courses=len(others),
            course_title=_course(subscriber).title,
            token=token,
        )


# -- progress page -------------------------------------------------------------------------


def local_time(value: datetime | None, tz: str, language: str | None = None) -> str:
    """A time as the reader reads it, in the page's language: 'Thursday 27 November,
    08:00', 'Donnerstag, 27. November, 08:00'."""
    return local_datetime(value, tz, language or page_language())


def _timeline(
    session: Session, subscriber: Subscriber, course: PublishedCourse
) -> list[dict[str, Any]]:
    """The reader's lessons: the ones received (in the order they came), then the ones
    still to come in the course's current order."""
    sent = {
        d.number: d.sent_at
        for d in session.scalars(
            select(Delivery)
            .where(in_current_run(subscriber), lesson_received())
            .order_by(Delivery.sent_at)
        )
    }
    progress = {
        p.lesson: p
        for p in session.scalars(
            select(LessonProgress).where(
                LessonProgress.subscriber_id == subscriber.id,
                LessonProgress.run == subscriber.run,
            )
        )
    }
    keys = [*sent, *(k for k in course.content.order if k not in sent)]
    rows = []
    for number, key in enumerate(keys, start=1):
        row = progress.get(key)
        known = (lesson_in_history(session, course, key) if key in sent else None) or (
            course.content.get(key)
        )
        rows.append(
            {
                "lesson": key,
                "number": number,
                "title": known.title if known else gettext("Lesson %(number)s", number=key),
                "sent_at": local_time(sent.get(key), subscriber.timezone),
                "received": key in sent,
                "done": bool(row and row.done_at),
                "checkin": gettext(CheckIn(row.checkin).label) if row and row.checkin else None,
                "checkin_at": local_time(row.checkin_at, subscriber.timezone) if row else "",
                "note": row.note if row and row.note else "",
                "view_token": state().signer.dumps("view", subscriber.public_id, key),
            }
        )
    return rows


def _progress_page(session: Session, subscriber: Subscriber, **extra: Any) -> str:
    app_state = state()
    course = _course(subscriber)
    queued = next_queued_lesson(session, subscriber)
    rhythm = rhythm_of(subscriber, course, app_state.settings)
    enrolled = {
        e.course_id: e for e in enrolments_of(session, subscriber.email) if e.id != subscriber.id
    }
    catalogue = app_state.courses.current(session)
    mine = [
        {
            "title": c.title,
            "status": e.status,
            "status_label": gettext(STATUS_LABELS.get(SubscriberStatus(e.status), e.status)),
            "lang": html_lang(c.language),
            "token": app_state.signer.dumps("progress", e.public_id),
        }
        for cid, e in enrolled.items()
        if (c := catalogue.get(cid)) is not None
    ]
    return render_template(
        "web/progress.html",
        subscriber=subscriber,
        course=course,
        statuses=SubscriberStatus,
        timeline=_timeline(session, subscriber, course),
        next_lesson=queued is not None,
        next_at=local_time(max(queued.due_at, utcnow()), subscriber.timezone) if queued else "",
        snoozed_until=local_time(subscriber.snoozed_until, subscriber.timezone)
        if subscriber.snoozed_until and subscriber.snoozed_until > utcnow()
        else "",
        send_hour=rhythm.hour,
        zones=zone_groups_in(page_language()),
        countries=_countries(),
        country_name=country_name(crisis_country(subscriber), page_language()),
        max_note=MAX_NOTE,
        tokens=_progress_tokens(subscriber),
        # Other courses to join: those the reader is not on now.
        others=[
            {
                "course": other,
                "token": app_state.signer.dumps("join", subscriber.public_id, other.id),
            }
            for other in catalogue.open()
            if other.id != course.id
            and (
                other.id not in enrolled
                or enrolled[other.id].status
                in (SubscriberStatus.COMPLETED, SubscriberStatus.UNSUBSCRIBED)
            )
        ],
        my_courses=mine,
        # The first day the form accepts (a snooze ends on a later day than today), and the
        # last one, so the date picker offers only what the server takes.
        first_snooze_day=(local_today := utcnow().astimezone(ZoneInfo(subscriber.timezone)).date())
        + timedelta(days=1),
        last_snooze_day=local_today + timedelta(days=MAX_SNOOZE_DAYS),
        **extra,
    )


@bp.get("/me/<token>")
def progress(token: str) -> ResponseReturnValue:
    """The reader's own page: what arrived, what they did, what comes next, and controls."""
    with state().sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        return _progress_page(session, subscriber)


@bp.post("/me/<token>/pause")
def progress_pause(token: str) -> ResponseReturnValue:
    with state().sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        pause(session, subscriber, utcnow())
    return redirect(url_for("links.progress", token=token, _anchor="status"), code=303)


#: The longest break a reader can choose ("pause" has no end).
MAX_SNOOZE_DAYS = 90


@bp.post("/me/<token>/snooze")
def progress_snooze(token: str) -> ResponseReturnValue:
    """ "Pause until ...": a few days, a week, or a chosen day; "now" ends the break."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        tz = ZoneInfo(subscriber.timezone)
        today = utcnow().astimezone(tz).date()
        choice = request.form.get("until") or ""
        typed = (request.form.get("until_date") or "").strip()
        until: datetime | None
        if choice == "now":
            until = None
        else:
            day: date | None = None
            if choice in ("3", "7"):
                day = today + timedelta(days=int(choice))
            elif len(typed) == 10:
                try:
                    day = date.fromisoformat(typed)
                except ValueError:
                    day = None
            if day is None or not today < day <= today + timedelta(days=MAX_SNOOZE_DAYS):
                raise LinkError(
                    400,
                    gettext(
                        "Please choose a day after today and at most %(days)s days ahead.",
                        days=MAX_SNOOZE_DAYS,
                    ),
                )
            # From the start of that day, in the reader's time zone: the course goes on at
            # their send hour that day.
            until = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
        if not snooze(
            session,
            subscriber,
            until,
            utcnow(),
            settings=course.settings,
            course=_course(subscriber),
        ):
            raise LinkError(400, gettext("Only a running course can take a break."))
    return redirect(url_for("links.progress", token=token, _anchor="status"), code=303)


@bp.post("/me/<token>/again")
def progress_again(token: str) -> ResponseReturnValue:
    """Take a completed course again: a new run from the first lesson (the reader's own
    click, through their own link); the earlier run's history stays."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        if subscriber.status != SubscriberStatus.COMPLETED:
            raise LinkError(400, gettext("Only a completed course can be taken again."))
        start_run(
            session,
            subscriber,
            utcnow(),
            course=_course(subscriber),
            settings=course.settings,
            again=True,
        )
    return redirect(url_for("links.progress", token=token, _anchor="status"), code=303)


@bp.route("/join/<token>", methods=["GET", "POST"])
def join(token: str) -> ResponseReturnValue:
    """Another course, offered to a reader: GET tells what it is, only the button (POST)
    starts it. The link came to the reader's own address, so their click is their
    consent; a mail scanner's fetch starts nothing."""
    app_state = state()
    try:
        payload = app_state.signer.loads("join", token)
    except InvalidToken:
        raise LinkError(400, BAD_LINK) from None
    if len(payload) < 2 or not isinstance(payload[1], int):
        raise LinkError(400, BAD_LINK)
    with app_state.sessions() as session, session.begin():
        person = by_public_id(session, payload[0])
        if person is None:
            raise LinkError(404, GONE)
        g.reader_country = person.country
        target = app_state.courses.current(session).get(payload[1])
        # The page is about the course offered, in its language.
        use_course_language(target or app_state.courses.current(session).get(person.course_id))
        if target is None or not target.open_for_signup:
            raise LinkError(404, gettext("This course is not open for signups at the moment."))
        enrolment = find_by_email(session, person.email, target.id)
        already = enrolment is not None and enrolment.status in (
            SubscriberStatus.ACTIVE,
            SubscriberStatus.PAUSED,
        )
        joined = request.method == "POST" and not already
        if joined:
            enrolment = join_course(session, person, target, utcnow(), settings=app_state.settings)
        progress_token = (
            app_state.signer.dumps("progress", enrolment.public_id) if enrolment else None
        )
        return render_template(
            "web/join.html",
            course=target,
            joined=joined,
            status=enrolment.status if enrolment else None,
            statuses=SubscriberStatus,
            token=token,
            progress_token=progress_token,
            consent_text=setting_text(app_state.settings, "signup_consent_text", page_language()),
        )


@bp.post("/me/<token>/resume")
def progress_resume(token: str) -> ResponseReturnValue:
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        resume(session, subscriber, utcnow(), settings=course.settings, course=_course(subscriber))
    return redirect(url_for("links.progress", token=token, _anchor="status"), code=303)


@bp.post("/me/<token>/country")
def progress_country(token: str) -> ResponseReturnValue:
    """Choose whose crisis resources the reader's emails and pages show."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        code = (request.form.get("country") or "").strip().upper()
        known = {c for c, _ in _countries()}
        if code and code not in known:
            raise LinkError(400, gettext("Please choose a country from the list."))
        # Where the person lives: the same for every course they take.
        for enrolment in enrolments_of(session, subscriber.email):
            enrolment.country = code or None
        record_event(session, subscriber, EventKind.SCHEDULE, utcnow(), value="country")
    return redirect(
        url_for("links.progress", token=token, saved="country", _anchor="help"), code=303
    )


def _countries() -> list[tuple[str, str]]:
    """The countries a reader can choose (the practice's choice, or all in the data), named
    and sorted in the page's language."""
    course = state()
    shown = set(course.settings.crisis_countries)
    language = page_language()
    named = [
        (code, country_name(code, language, name))
        for code, name in countries(course.renderer.crisis)
        if not shown or code in shown
    ]
    return sorted(named, key=lambda pair: (pair[1].casefold(), pair[0]))


def crisis_country(subscriber: Subscriber) -> str:
    """The country whose crisis resources this reader sees (the worldwide entry's code when
    their country is not shown)."""
    course = state()
    return course.renderer.crisis_for(subscriber.country).country


#: What the reader's list of their other courses says about each (translated on the page).
STATUS_LABELS = {
    SubscriberStatus.PENDING: N_("pending"),
    SubscriberStatus.ACTIVE: N_("active"),
    SubscriberStatus.PAUSED: N_("paused"),
    SubscriberStatus.COMPLETED: N_("completed"),
    SubscriberStatus.UNSUBSCRIBED: N_("unsubscribed"),
    SubscriberStatus.BOUNCED: N_("bounced"),
}


@bp.post("/me/<token>/schedule")
def progress_schedule(token: str) -> ResponseReturnValue:
    """Change the send hour and time zone."""
    course = state()
    with course.sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        errors: dict[str, str] = {}
        hour = parse_hour(request.form.get("send_hour", ""))
        tz = request.form.get("timezone", "")
        if hour is None:
            errors["send_hour"] = gettext("Please choose an hour between 0 and 23.")
        if not may_choose(tz, subscriber.timezone):
            errors["timezone"] = gettext("Please choose a time zone from the list.")
        if errors:
            return _progress_page(session, subscriber, errors=errors), 400
        assert hour is not None
        set_schedule(
            session,
            subscriber,
            utcnow(),
            send_hour=hour,
            timezone=tz,
            settings=course.settings,
            course=_course(subscriber),
        )
    return redirect(
        url_for("links.progress", token=token, saved="schedule", _anchor="when"), code=303
    )


@bp.post("/me/<token>/note")
def progress_note(token: str) -> ResponseReturnValue:
    """Change or delete the private note of a lesson the reader received."""
    with state().sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        lesson = parse_lesson_number(request.form.get("lesson", ""))
        note = (request.form.get("note") or "").replace("\x00", "").strip()
        if lesson is None or not _was_sent(session, subscriber, lesson):
            raise LinkError(400, gettext("Please choose a lesson you have received."))
        if len(note) > MAX_NOTE:
            return _progress_page(
                session,
                subscriber,
                errors={"note": note_too_long()},
            ), 400
        save_note(session, subscriber, lesson, note, utcnow(), _phrases())
    return redirect(url_for("links.progress", token=token, saved="note"), code=303)


@bp.get("/me/<token>/data.json")
def progress_data(token: str) -> ResponseReturnValue:
    """Download everything stored about the reader, as JSON."""
    with state().sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        data = export_data(session, subscriber)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-course-data.json"'},
    )


@bp.route("/me/<token>/delete", methods=["GET", "POST"])
def progress_delete(token: str) -> ResponseReturnValue:
    """Delete everything for good, after a confirmation step."""
    with state().sessions() as session, session.begin():
        subscriber, _ = _resolve(session, "progress", token, with_lesson=False)
        if request.method == "GET":
            return render_template("web/delete.html", tokens=_progress_tokens(subscriber))
        if request.form.get("confirm") != "yes":
            return render_template(
                "web/delete.html", tokens=_progress_tokens(subscriber), error=True
            ), 400
        erase(session, subscriber, state().settings.secret_keys, utcnow())
    return render_template("web/deleted.html")
