"""The practice's side: login, dashboard, subscribers, lessons.

Views stay thin: numbers come from ``course.reports``, state changes from the domain
modules. Every operator action is recorded as an event with the operator's id.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from course.bounces import replies_of
from course.extensions import login_manager, state
from course.mail import DeliveryError
from course.models import (
    Delivery,
    Event,
    EventKind,
    LessonProgress,
    Operator,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from course.operators import authenticate, end_sessions, find_operator
from course.privacy import erase, export_data
from course.progress import record_event
from course.render import SAMPLE_READER
from course.reports import (
    Filters,
    deliverability,
    funnel,
    health,
    per_lesson,
    stalled_readers,
)
from course.schedule import parse_lesson_number
from course.security import keyed_hash
from course.subscriptions import pause, resend_lesson, resume, retry_failed, unsubscribe
from course.testsend import send_test
from course.web.charts import bar_chart, stacked_bars
from course.web.ratelimits import RateLimit, limit_endpoint

bp = Blueprint("admin", __name__, url_prefix="/admin")


def init_app(app: Flask) -> None:
    """Register the admin pages and the login's rate limits."""
    app.register_blueprint(bp)
    limit_endpoint(app, "admin.login", LOGIN_LIMITS)


PAGE_SIZE = 50


# -- login rate limits and known devices ------------------------------------------------------

#: The cookie that marks a browser an operator has signed in from before ("device cookie").
DEVICE_COOKIE = "course_device"
DEVICE_MAX_AGE = timedelta(days=180)  # renewed at every successful login
_DEVICE_SALT = "course.admin-device"


@dataclass(frozen=True)
class KnownDevice:
    """A valid known-device cookie: the operator who signed in, and this cookie's own id."""

    operator_id: int
    nonce: str


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(state().settings.secret_keys), salt=_DEVICE_SALT)


def _device_cookie() -> KnownDevice | None:
    """The request's known-device cookie, if it is one of ours and not too old."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw or len(raw) > 200:
        return None
    try:
        data = _device_serializer().loads(raw, max_age=int(DEVICE_MAX_AGE.total_seconds()))
    except (BadData, UnicodeError, ValueError, TypeError):
        return None
    if not (isinstance(data, list) and len(data) == 2):
        return None
    operator_id, nonce = data
    if type(operator_id) is not int or not isinstance(nonce, str) or not nonce:
        return None
    return KnownDevice(operator_id, nonce)


def _known_device() -> KnownDevice | None:
    """The request's known-device cookie if it names the account being tried, else None.

    Asked by several limits in one request, so the answer is kept in ``g``.
    """
    if "course_known_device" not in g:
        g.course_known_device = None
        device = _device_cookie()
        if device is not None:
            try:
                typed = (request.form.get("email") or "")[:320]
                with state().read_sessions() as session:
                    operator = find_operator(session, typed)
                    if operator is not None and operator.id == device.operator_id:
                        g.course_known_device = device
            except Exception:  # an unreadable body, a database hiccup: no exemption
                g.course_known_device = None
    known: KnownDevice | None = g.course_known_device
    return known


def _on_known_device() -> bool:
    return _known_device() is not None


def _on_unknown_device() -> bool:
    return _known_device() is None


def _login_email() -> str:
    """The per-account key: a keyed hash of what was typed, never the text itself (the limit
    store is no place for operators' addresses, or for whatever else someone types)."""
    typed = request.form.get("email") or ""
    return "account:" + keyed_hash(state().settings.secret_keys, typed.strip().lower())


def _device_key() -> str:
    device = _known_device()
    nonce = device.nonce if device is not None else "-"
    return "device:" + keyed_hash(state().settings.secret_keys, nonce)


def _failed_login(response: Response) -> bool:
    return response.status_code == 401


#: How sign-in is limited, so that guessing is slow but nobody can lock the practice out.
#:
#: 1. Per client address: every POST counts, from everyone, known device or not.
#: 2. Per account tried (so a botnet cannot spread guesses for one account over many
#:    addresses): only FAILED attempts (401) count, and the key is a keyed hash of the typed
#:    address, never the address. A browser with a valid known-device cookie for that account
#:    is exempt, so an attacker who fills this limit from elsewhere locks out only new
#:    browsers, never the operator on a browser they have signed in from before. This is
#:    OWASP's "device cookie" scheme (Authentication Cheat Sheet, "Device Cookies").
#: 3. Per known device: failed attempts made with a known-device cookie count against that
#:    cookie, so a stolen cookie gives no unlimited guesses either.
#:
#: The device cookie (``DEVICE_COOKIE``) is set at each successful login: signed with the
#: app's secret keys (own salt), HttpOnly, SameSite=Lax, Secure over https, sent only to the
#: login page; it holds the operator's id and a random id of its own, nothing personal, and
#: grants no access by itself. Logging out leaves it (that is the point). A limit that
#: counts only failures is checked before the view and counted after it, so with N requests
#: in flight at once (N = web workers) it can overshoot by up to N - 1.
LOGIN_LIMITS = (
    RateLimit("5 per minute;30 per hour"),
    RateLimit(
        "10 per hour",
        key=_login_email,
        scope="login-account",
        exempt_when=_on_known_device,
        deduct_when=_failed_login,
    ),
    RateLimit(
        "10 per hour",
        key=_device_key,
        scope="login-device",
        exempt_when=_on_unknown_device,
        deduct_when=_failed_login,
    ),
)


def _remember_device(response: BaseResponse, operator_id: int) -> None:
    """Mark this browser as one ``operator_id`` signed in from (a new cookie, same id)."""
    current = _device_cookie()
    if current is not None and current.operator_id == operator_id:
        nonce = current.nonce
    else:
        nonce = secrets.token_urlsafe(16)
    response.set_cookie(
        DEVICE_COOKIE,
        _device_serializer().dumps([operator_id, nonce]),
        max_age=int(DEVICE_MAX_AGE.total_seconds()),
        path=url_for("admin.login"),
        secure=state().settings.base_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )


# -- the logged-in operator -----------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]{1,18}")


class AdminUser(UserMixin):
    """The logged-in operator, as Flask-Login sees it.

    Its id, which Flask-Login keeps in the session (and would put in a remember-me cookie),
    is ``"<operator id>:<session version>"``: when the operator logs out the version goes up,
    and every session made before, copies included, no longer loads.
    """

    def __init__(self, operator: Operator) -> None:
        self.id = f"{operator.id}:{operator.session_version}"
        self.operator_id = operator.id
        self.session_version = operator.session_version
        self.email = operator.email
        self.timezone = operator.timezone


@login_manager.user_loader
def _load_user(user_id: str) -> AdminUser | None:
    operator_id, _, version = user_id.partition(":")
    if not (_NUMBER.fullmatch(operator_id) and _NUMBER.fullmatch(version)):
        return None  # includes a plain "<id>" from before session versions: sign in again
    with state().read_sessions() as session:
        operator = session.get(Operator, int(operator_id))
        if operator is None or operator.session_version != int(version):
            return None
        return AdminUser(operator)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


@bp.app_template_filter("optime")
def operator_time(value: datetime | None) -> str:
    """A stored UTC time in the operator's time zone."""
    if value is None:
        return "—"
    tz = getattr(current_user, "timezone", None) or state().settings.default_timezone
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


@bp.context_processor
def _admin_context() -> dict[str, Any]:
    tz = getattr(current_user, "timezone", None) or state().settings.default_timezone
    return {"operator_tz": tz, "current_user": current_user}


# -- access ---------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign in. Rate limited per address, per account and per device (``LOGIN_LIMITS``)."""
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        with state().sessions() as session, session.begin():
            operator = authenticate(
                session, form.email.data or "", form.password.data or "", utcnow()
            )
            user = AdminUser(operator) if operator else None
        if user is not None:
            login_user(user)
            response = redirect(url_for("admin.dashboard"))
            _remember_device(response, user.operator_id)
            return response
        error = "That email and password don't match an operator account."
    status = 401 if request.method == "POST" else 200
    return render_template("web/admin/login.html", form=form, error=error), status


@bp.post("/logout")
@login_required
def logout() -> ResponseReturnValue:
    """Sign out: end this operator's sessions on the server, not just this cookie."""
    with state().sessions() as session, session.begin():
        end_sessions(session, current_user.operator_id)
    logout_user()
    return redirect(url_for("admin.login"))


# -- dashboard ------------------------------------------------------------------------------


def _filters() -> tuple[Filters, dict[str, str]]:
    errors: dict[str, str] = {}

    def day(name: str) -> date | None:
        raw = request.args.get(name, "").strip()
        if not raw:
            return None
        try:
            value = date.fromisoformat(raw)
        except ValueError:
            errors[name] = "Use a date like 2026-01-31."
            return None
        if not date(1970, 1, 1) <= value <= date(9000, 12, 31):  # date + 1 day must exist
            errors[name] = "Use a date between 1970 and 9000."
            return None
        return value

    source = request.args.get("source", "").strip()[:64] or None
    return Filters(start=day("from"), end=day("to"), source=source), errors


def _lesson_titles() -> tuple[dict[int, str], int]:
    lessons = state().lessons.current()
    return {d: lesson.title for d, lesson in lessons.lessons.items()}, lessons.total


@bp.get("/")
@login_required
def dashboard() -> ResponseReturnValue:
    """Funnel, per-lesson results and sending health."""
    course = state()
    filters, errors = _filters()
    titles, total = _lesson_titles()
    with course.read_sessions() as session:
        steps = funnel(session, filters, total)
        lessons = per_lesson(session, filters, titles, total)
        pulse = health(session, utcnow(), course.settings.tick_seconds)
        returns = deliverability(session, utcnow())
        sources = [
            s
            for s in session.scalars(
                select(Subscriber.source).where(Subscriber.source.is_not(None)).distinct()
            )
        ]
    signed_up = steps[0].count or 1
    return render_template(
        "web/admin/dashboard.html",
        steps=steps,
        signed_up=signed_up,
        lessons=lessons,
        health=pulse,
        returns=returns,
        filters=filters,
        errors=errors,
        sources=sorted(sources),
        funnel_chart=bar_chart([(s.label, s.count) for s in steps], "Course funnel"),
        checkin_chart=stacked_bars(
            [(f"Lesson {ls.lesson}", [ls.checkins[k] for k in ls.checkins]) for ls in lessons],
            ["Lighter", "About the same", "Stirred things up"],
            "Check-in answers per lesson",
        ),
        lesson_errors=course.lessons.current().errors,
    )


# -- subscribers ----------------------------------------------------------------------------


@bp.get("/subscribers")
@login_required
def subscribers() -> ResponseReturnValue:
    """Search by address or name, filter by status, 50 per page."""
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    page = request.args.get("page", "1")
    page_no = int(page) if re.fullmatch(r"[0-9]{1,5}", page) and int(page) > 0 else 1
    query = select(Subscriber)
    if q:
        pattern = (
            "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        query = query.where(
            or_(
                func.lower(Subscriber.email).like(pattern, escape="\\"),
                func.lower(Subscriber.name).like(pattern, escape="\\"),
            )
        )
    if status in {s.value for s in SubscriberStatus}:
        query = query.where(Subscriber.status == status)
    with state().read_sessions() as session:
        count = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        rows = session.scalars(
            query.order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
            .limit(PAGE_SIZE)
            .offset((page_no - 1) * PAGE_SIZE)
        ).all()
    pages = max(1, (count + PAGE_SIZE - 1) // PAGE_SIZE)
    return render_template(
        "web/admin/subscribers.html",
        rows=rows,
        count=count,
        q=q,
        status=status,
        statuses=list(SubscriberStatus),
        page=page_no,
        pages=pages,
    )


def _subscriber(session: Session, public_id: str) -> Subscriber:
    subscriber = session.scalars(
        select(Subscriber).where(Subscriber.public_id == public_id[:64])
    ).first()
    if subscriber is None:
        abort(404)
    return subscriber


@bp.get("/subscribers/<public_id>")
@login_required
def subscriber_detail(public_id: str) -> ResponseReturnValue:
    """One subscriber: their timeline of deliveries and events, and actions."""
    with state().read_sessions() as session:
        subscriber = _subscriber(session, public_id)
        deliveries = session.scalars(
            select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
        ).all()
        events = session.scalars(
            select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id)
        ).all()
        progress = session.scalars(
            select(LessonProgress)
            .where(LessonProgress.subscriber_id == subscriber.id)
            .order_by(LessonProgress.lesson)
        ).all()
        replies = replies_of(session, subscriber)
    timeline = sorted(
        [("delivery", d.sent_at or d.due_at, d) for d in deliveries]
        + [("event", e.created_at, e) for e in events if e.kind != EventKind.REPLY]
        + [("reply", r.received_at, r) for r in replies],
        key=lambda item: item[1],
    )
    sent_lessons = sorted({d.number for d in deliveries if d.kind == "lesson" and d.sent_at})
    return render_template(
        "web/admin/subscriber.html",
        subscriber=subscriber,
        timeline=timeline,
        progress=progress,
        sent_lessons=sent_lessons,
        has_failed=any(
            d.kind == "lesson" and d.status == "failed" and not d.sent_at for d in deliveries
        ),
        statuses=SubscriberStatus,
    )


@bp.post("/subscribers/<public_id>/<action>")
@login_required
def subscriber_action(public_id: str, action: str) -> ResponseReturnValue:
    """Pause, resume, unsubscribe or re-send a lesson, as this operator."""
    course = state()
    operator_id = current_user.operator_id
    now = utcnow()
    with course.sessions() as session, session.begin():
        subscriber = _subscriber(session, public_id)
        if action == "pause":
            ok = pause(session, subscriber, now, via="admin", operator_id=operator_id)
            message = "Paused." if ok else "Only an active course can be paused."
        elif action == "resume":
            ok = resume(
                session,
                subscriber,
                now,
                settings=course.settings,
                total=course.lessons.current().total,
                via="admin",
                operator_id=operator_id,
            )
            message = "Resumed: one lesson at the next send hour." if ok else "Not paused."
        elif action == "unsubscribe":
            ok = unsubscribe(session, subscriber, now, via="admin", operator_id=operator_id)
            message = "Unsubscribed." if ok else "Already unsubscribed."
        elif action == "resend":
            lesson = request.form.get("lesson", "")
            number = parse_lesson_number(lesson)
            ok = number is not None and resend_lesson(session, subscriber, number, now, operator_id)
            message = (
                f"Lesson {lesson} will be sent again on the next tick."
                if ok
                else "Only a lesson this reader already received can be re-sent."
            )
        elif action == "retry":
            number = retry_failed(session, subscriber, now, operator_id)
            ok = number is not None
            message = (
                f"Lesson {number} will be tried again on the next tick."
                if ok
                else "Nothing to retry: no failed lesson for an active reader."
            )
        else:
            abort(404)
    flash(message, "notice" if ok else "alert")
    return redirect(url_for("admin.subscriber_detail", public_id=public_id), code=303)


@bp.post("/retry-failed")
@login_required
def retry_all_failed() -> ResponseReturnValue:
    """Queue every stalled reader's failed lesson again (after the cause was fixed)."""
    operator_id = current_user.operator_id
    now = utcnow()
    with state().sessions() as session, session.begin():
        ids = list(session.scalars(stalled_readers()))
        retried = 0
        for subscriber in session.scalars(select(Subscriber).where(Subscriber.id.in_(ids))):
            retried += retry_failed(session, subscriber, now, operator_id) is not None
    flash(f"{retried} lesson(s) will be tried again on the next tick.", "notice")
    return redirect(url_for("admin.dashboard"), code=303)


@bp.get("/subscribers/<public_id>/export.json")
@login_required
def subscriber_export(public_id: str) -> ResponseReturnValue:
    """The subscriber's data as JSON (for a data request)."""
    with state().sessions() as session, session.begin():
        subscriber = _subscriber(session, public_id)
        data = export_data(session, subscriber)
        record_event(
            session,
            subscriber,
            EventKind.EXPORT,
            utcnow(),
            via="admin",
            operator_id=current_user.operator_id,
        )
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="subscriber-{public_id}.json"'},
    )


@bp.route("/subscribers/<public_id>/erase", methods=["GET", "POST"])
@login_required
def subscriber_erase(public_id: str) -> ResponseReturnValue:
    """Erase a subscriber for good, after a confirmation step."""
    with state().sessions() as session, session.begin():
        subscriber = _subscriber(session, public_id)
        if request.method == "GET" or request.form.get("confirm") != subscriber.email:
            failed = request.method == "POST"
            return render_template(
                "web/admin/erase.html", subscriber=subscriber, failed=failed
            ), 400 if failed else 200
        erase(session, subscriber, state().settings.secret_keys, utcnow())
        # The erase itself is recorded without a subscriber: who did it, not to whom.
        record_event(
            session,
            None,
            EventKind.ERASE,
            utcnow(),
            via="admin",
            operator_id=current_user.operator_id,
        )
    flash("The subscriber and their personal data were erased.", "notice")
    return redirect(url_for("admin.subscribers"), code=303)


# -- lessons --------------------------------------------------------------------------------


@bp.get("/lessons")
@login_required
def lessons() -> ResponseReturnValue:
    """All lesson files, with broken ones and their reasons."""
    current = state().lessons.current()
    return render_template(
        "web/admin/lessons.html",
        lessons=[current.lessons[d] for d in sorted(current.lessons)],
        errors=current.errors,
        total=current.total,
    )


@bp.get("/lessons/<int:day>")
@login_required
def lesson_detail(day: int) -> ResponseReturnValue:
    """A lesson rendered as a reader gets it: HTML (sandboxed) and text."""
    current = state().lessons.current()
    lesson = current.get(day)
    if lesson is None:
        abort(404)
    renderer = state().renderer
    try:
        compiled = renderer.compiled("lesson", day, current)
    except Exception as exc:  # a template error must show as a message, not a 500
        return render_template("web/admin/lesson.html", lesson=lesson, error=str(exc)), 200
    html, text = compiled.fill(renderer.slot_values(compiled.slots, SAMPLE_READER, "lesson", day))
    return render_template(
        "web/admin/lesson.html",
        lesson=lesson,
        subject=compiled.subject,
        html=html,
        text=text,
        error=None,
    )


@bp.post("/lessons/<int:day>/test")
@login_required
def lesson_test(day: int) -> ResponseReturnValue:
    """Send this lesson to the operator's own address, now."""
    course = state()
    current = course.lessons.current()
    if current.get(day) is None:
        abort(404)
    try:
        send_test(course.settings, course.renderer, current, day, current_user.email, utcnow())
    except DeliveryError as exc:
        flash(f"The test could not be sent: {exc}", "alert")
    else:
        flash(f"Lesson {day} was sent to {current_user.email}.", "notice")
    return redirect(url_for("admin.lesson_detail", day=day), code=303)
