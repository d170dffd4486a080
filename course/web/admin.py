"""The practice's side: login, dashboard, subscribers, lessons, "Needs a look", staff.

Views stay thin: numbers come from ``course.reports``, state changes from the domain
modules. Every operator action is recorded as an event with the operator's id, and every
view of readers' notes or replies in the audit log (``course.audit``).

**Roles** (``course.operators.Role``). Every route names the least role it needs with one
decorator, :func:`requires`; a signed-in operator below it gets a friendly 403 page, and
pages hide the links and sections their role cannot use:

=============================================  =========  =========  =====
route                                          assistant  therapist  owner
=============================================  =========  =========  =====
dashboard; courses: view, preview, send a      yes        yes        yes
test (course.web.admin_courses)
courses: edit, publish, revert                 no         yes        yes
subscribers: search, page, pause, resume,      yes        yes        yes
unsubscribe, re-send, retry, erase
a reader's notes and replies (on their page)   no         yes        yes
a reader's data export (JSON)                  no         yes        yes
"Needs a look" (and marking items)             no         yes        yes
staff accounts, the audit log                  no         no         yes
two-factor set-up, sign out                    yes        yes        yes
=============================================  =========  =========  =====

The export is for therapists and owners only: it answers a reader's access request
(GDPR Art. 15) and so must contain everything, notes and replies included. An assistant
cannot read notes, and an export without them would be an incomplete answer that looks
complete; so assistants get no export at all (readers can download their own data from
their progress page at any time).

**Sign-in** is a password, then, for an operator with two-factor sign-in, a code from their
authenticator app or a recovery code (``/admin/login/code``). Between the two steps the
session holds only "the password was right for operator N" (``_PENDING``) for five minutes;
nothing is signed in until the second step. Both steps are rate limited per client, per
account and per known device (``LOGIN_LIMITS``, ``CODE_LIMITS``). With
``COURSE_REQUIRE_TOTP`` an operator without two-factor sign-in is sent to set it up after
their password, and every other page sends them back there until they have.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import wraps
from typing import Any
from zoneinfo import ZoneInfo

import segno
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
from flask import session as cookie_session
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadData, URLSafeTimedSerializer
from markupsafe import Markup
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer
from werkzeug.wrappers import Response as BaseResponse
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, ValidationError

from course import audit
from course.audit import Action
from course.bookings import SOURCES as BOOKING_SOURCES
from course.bounces import replies_of
from course.care import RiskPhrases, mark, needs_a_look, open_count, risk_phrases
from course.courses import PublishedCourse
from course.crypto import DataKeyError, decrypt, encrypt
from course.extensions import login_manager, state
from course.i18n import N_, available_languages, gettext, language_choices, use_language
from course.models import (
    Delivery,
    Event,
    EventKind,
    LessonProgress,
    Operator,
    Reply,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from course.operators import (
    OperatorError,
    Role,
    SecondFactor,
    authenticate,
    check_second_factor,
    create_operator,
    enable_totp,
    end_sessions,
    find_operator,
    new_totp_secret,
    recovery_codes_left,
    remove_operator,
    reset_totp,
    role_of,
    set_role,
    signed_in,
    staff,
    totp_uri,
)
from course.privacy import consent_record, erase, export_data
from course.progress import record_event
from course.reports import (
    BookingCounts,
    Filters,
    LessonStats,
    bookings_by_lesson,
    course_lessons,
    deliverability,
    funnel,
    health,
    per_lesson,
    stalled_readers,
    summary,
)
from course.schedule import parse_lesson_number
from course.security import keyed_hash
from course.subscriptions import (
    pause,
    resend_lesson,
    resume,
    retry_failed,
    unsubscribe,
)
from course.timeline import describe as timeline_sentence
from course.timeline import how as timeline_how
from course.timezones import may_choose
from course.web.charts import bar_chart, stacked_bars
from course.web.ratelimits import RateLimit, limit_endpoint

bp = Blueprint("admin", __name__, url_prefix="/admin")


def init_app(app: Flask) -> None:
    """Register the admin pages and the rate limits of both sign-in steps."""
    app.register_blueprint(bp)
    limit_endpoint(app, "admin.login", LOGIN_LIMITS)
    limit_endpoint(app, "admin.login_code", CODE_LIMITS)


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


def _attempted_operator_id() -> int | None:
    """The account this sign-in request is for: the typed address's on the password step,
    the one whose password was right on the code step."""
    if request.endpoint == "admin.login_code":
        pending = _pending_sign_in()
        return pending.operator_id if pending is not None else None
    typed = (request.form.get("email") or "")[:320]
    with state().read_sessions() as session:
        operator = find_operator(session, typed)
        return operator.id if operator is not None else None


def _known_device() -> KnownDevice | None:
    """The request's known-device cookie if it names the account being tried, else None.

    Asked by several limits in one request, so the answer is kept in ``g``.
    """
    if "course_known_device" not in g:
        g.course_known_device = None
        device = _device_cookie()
        if device is not None:
            try:
                if _attempted_operator_id() == device.operator_id:
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


def _code_account() -> str:
    """The per-account key of the code step: a keyed hash of the operator's id."""
    pending = _pending_sign_in()
    who = str(pending.operator_id) if pending is not None else "-"
    return "account:" + keyed_hash(state().settings.secret_keys, f"operator-id:{who}")


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
#: The device cookie (``DEVICE_COOKIE``) is set at each successful login (after the second
#: step, for an operator with two-factor sign-in): signed with the app's secret keys (own
#: salt), HttpOnly, SameSite=Lax, Secure over https, sent only to the login pages; it holds
#: the operator's id and a random id of its own, nothing personal, and grants no access by
#: itself. Logging out leaves it (that is the point). A limit that counts only failures is
#: checked before the view and counted after it, so with N requests in flight at once
#: (N = web workers) it can overshoot by up to N - 1.
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

#: The second step (a code or a recovery code) is limited the same way, per account keyed
#: by the operator whose password was right. With three codes valid at a time, 30 wrong
#: guesses a day give an attacker who already has the password about one chance in 11,000.
CODE_LIMITS = (
    RateLimit("5 per minute;30 per hour"),
    RateLimit(
        "10 per hour;30 per day",
        key=_code_account,
        scope="login-code-account",
        exempt_when=_on_known_device,
        deduct_when=_failed_login,
    ),
    RateLimit(
        "10 per hour",
        key=_device_key,
        scope="login-code-device",
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
        path=url_for("admin.login"),  # also sent to /admin/login/code
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
    and every session made before, copies included, no longer loads. The role and whether
    two-factor sign-in is on are read from the database at every request, so a change by an
    owner applies at once.
    """

    def __init__(self, operator: Operator) -> None:
        self.id = f"{operator.id}:{operator.session_version}"
        self.operator_id = operator.id
        self.session_version = operator.session_version
        self.email = operator.email
        self.timezone = operator.timezone
        self.language = operator.language
        self.role = role_of(operator)
        self.has_totp = operator.totp_enabled_at is not None

    def can(self, role: Role) -> bool:
        """Whether this operator's role includes ``role``."""
        return self.role.includes(role)


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


def _must_enrol(user: Any) -> bool:
    """Whether this signed-in operator must set up two-factor sign-in before anything else."""
    return bool(state().settings.require_totp and not user.has_totp)


View = Callable[..., ResponseReturnValue]

#: The least role of every admin view, by endpoint (filled by :func:`requires`).
REQUIRED_ROLES: dict[str, Role] = {}


def requires(role: Role, *, during_enrolment: bool = False) -> Callable[[View], View]:
    """The one access check of admin views: signed in, two-factor set up if the practice
    requires it (unless ``during_enrolment``), and a role that includes ``role``."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()  # type: ignore[no-any-return]
            if not during_enrolment and _must_enrol(current_user):
                return redirect(url_for("admin.two_factor"))
            if not current_user.can(role):
                return render_template("web/admin/forbidden.html", needed=role), 403
            return view(*args, **kwargs)

        REQUIRED_ROLES[f"{bp.name}.{view.__name__}"] = role
        return guarded

    return decorate


def _phrases() -> RiskPhrases:
    return risk_phrases(state().settings.risk_phrases_file)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


class CodeForm(FlaskForm):
    code = StringField("Code", validators=[DataRequired(), Length(max=64)])


@bp.app_template_filter("optime")
def operator_time(value: datetime | None) -> str:
    """A stored UTC time in the operator's time zone."""
    if value is None:
        return "—"
    tz = getattr(current_user, "timezone", None) or state().settings.default_timezone
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


#: The role names the admin shows (course.operators.Role), for the catalogs.
ROLE_NAMES = (N_("owner"), N_("therapist"), N_("assistant"))
#: How a "Needs a look" item can be marked (course.care), for the catalogs.
CARE_MARKS = (N_("seen"), N_("contacted"))


@bp.before_request
def _staff_language() -> None:
    """The admin speaks the signed-in staff member's own choice (English until they make
    one, and on the sign-in pages)."""
    chosen = getattr(current_user, "language", None) if current_user.is_authenticated else None
    use_language(chosen)


@bp.post("/language")
@requires(Role.ASSISTANT, during_enrolment=True)
def set_language() -> ResponseReturnValue:
    """Choose the admin's language for oneself (kept on the staff account, so it follows
    them to every browser); back to the page it was chosen on."""
    chosen = request.form.get("language", "")
    if chosen not in available_languages():
        abort(400)
    with state().sessions() as session, session.begin():
        operator = session.get(Operator, current_user.operator_id)
        if operator is not None:
            operator.language = chosen
    back = request.form.get("next", "")
    # Only a page of the admin: never another site ("//evil.example", "/\\evil.example").
    if not (back.startswith("/admin/") and "//" not in back and "\\" not in back):
        back = url_for("admin.dashboard")
    return redirect(back, code=303)


@bp.context_processor
def _admin_context() -> dict[str, Any]:
    tz = getattr(current_user, "timezone", None) or state().settings.default_timezone
    signed = bool(current_user.is_authenticated)
    enrolling = signed and _must_enrol(current_user)
    care_count = None
    if signed and not enrolling and current_user.can(Role.THERAPIST):
        with state().read_sessions() as session:
            care_count = open_count(session, utcnow(), _phrases())

    def can(role: Role) -> bool:
        return signed and not enrolling and bool(current_user.can(role))

    return {
        "operator_tz": tz,
        "current_user": current_user,
        "Role": Role,
        "can": can,
        "enrolling": enrolling,
        "care_count": care_count,
        "admin_languages": language_choices(),
    }


# -- access ---------------------------------------------------------------------------------

#: Between the password and the second factor: [operator id, session version, unix time].
_PENDING = "course_2fa_pending"
PENDING_MAX_AGE = timedelta(minutes=5)


@dataclass(frozen=True)
class PendingSignIn:
    operator_id: int
    session_version: int
    started: float


def _pending_sign_in() -> PendingSignIn | None:
    """The sign-in waiting for its second factor in this session, if still valid: recent,
    and for an operator who still has two-factor sign-in and the same session version.

    Asked by the rate limits and the view in one request, so the answer is kept in ``g``.
    """
    if "course_pending" not in g:
        g.course_pending = _read_pending()
    pending: PendingSignIn | None = g.course_pending
    return pending


def _read_pending() -> PendingSignIn | None:
    raw = cookie_session.get(_PENDING)
    if not (isinstance(raw, list) and len(raw) == 3):
        return None
    operator_id, version, started = raw
    if type(operator_id) is not int or type(version) is not int:
        return None
    if not isinstance(started, int | float):
        return None
    age = utcnow().timestamp() - started
    if not -60 <= age <= PENDING_MAX_AGE.total_seconds():
        return None
    with state().read_sessions() as session:
        operator = session.get(Operator, operator_id)
        if operator is None or operator.session_version != version:
            return None
        if operator.totp_enabled_at is None:
            return None
    return PendingSignIn(operator_id, version, started)


def _complete_sign_in(user: AdminUser) -> BaseResponse:
    """Sign ``user`` in for real, and send them where they can start."""
    cookie_session.pop(_PENDING, None)
    login_user(user)
    target = "admin.two_factor" if _must_enrol(user) else "admin.dashboard"
    response = redirect(url_for(target))
    _remember_device(response, user.operator_id)
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign in, step one: the password. Rate limited per address, per account and per
    device (``LOGIN_LIMITS``)."""
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        now = utcnow()
        user = pending = None
        with state().sessions() as session, session.begin():
            operator = authenticate(session, form.email.data or "", form.password.data or "")
            if operator is not None and operator.totp_enabled_at is not None:
                pending = [operator.id, operator.session_version, now.timestamp()]
            elif operator is not None:
                signed_in(session, operator.id, now)
                audit.record(session, operator.id, Action.SIGN_IN, None, now, detail="password")
                user = AdminUser(operator)
        if pending is not None:
            cookie_session[_PENDING] = pending
            return redirect(url_for("admin.login_code"))
        if user is not None:
            return _complete_sign_in(user)
        error = "That email and password don't match an operator account."
    status = 401 if request.method == "POST" else 200
    return render_template("web/admin/login.html", form=form, error=error), status


@bp.route("/login/code", methods=["GET", "POST"])
def login_code() -> ResponseReturnValue:
    """Sign in, step two: a code from the authenticator app, or a recovery code. Rate
    limited like the password (``CODE_LIMITS``)."""
    pending = _pending_sign_in()
    if pending is None:
        if _PENDING in cookie_session:
            cookie_session.pop(_PENDING, None)
            flash("That took too long. Please sign in again.", "alert")
        return redirect(url_for("admin.login"))
    form = CodeForm()
    error = None
    if form.validate_on_submit():
        now = utcnow()
        user = None
        left = 0
        with state().sessions() as session, session.begin():
            how = check_second_factor(session, pending.operator_id, form.code.data or "", now)
            operator = session.get(Operator, pending.operator_id)
            if how is not None and operator is not None:
                signed_in(session, operator.id, now)
                audit.record(
                    session, operator.id, Action.SIGN_IN, None, now, detail=f"password+{how}"
                )
                user = AdminUser(operator)
                left = recovery_codes_left(operator)
        if user is not None:
            if how is SecondFactor.RECOVERY_CODE:
                flash(
                    f"You signed in with a recovery code; it cannot be used again. "
                    f"{left} recovery code{'' if left == 1 else 's'} left.",
                    "alert" if left < 3 else "notice",
                )
            return _complete_sign_in(user)
        error = "That code didn't work. Codes change every 30 seconds, and each works once."
    status = 401 if request.method == "POST" else 200
    return render_template("web/admin/login_code.html", form=form, error=error), status


@bp.post("/logout")
@requires(Role.ASSISTANT, during_enrolment=True)
def logout() -> ResponseReturnValue:
    """Sign out: end this operator's sessions on the server, not just this cookie."""
    with state().sessions() as session, session.begin():
        end_sessions(session, current_user.operator_id)
    logout_user()
    cookie_session.pop(_ENROL, None)
    cookie_session.pop(_PENDING, None)
    return redirect(url_for("admin.login"))


# -- two-factor set-up ----------------------------------------------------------------------

#: The secret being set up, until confirmed: [operator id, encrypted secret, unix time].
_ENROL = "course_totp_enrol"
ENROL_MAX_AGE = timedelta(minutes=30)


def _enrol_secret(operator_id: int) -> str:
    """The secret this operator is setting up (kept in the session, encrypted with the data
    keys, for half an hour, so reloading the page does not change the QR code)."""
    raw = cookie_session.get(_ENROL)
    if isinstance(raw, list) and len(raw) == 3 and raw[0] == operator_id:
        _, token, started = raw
        age = utcnow().timestamp() - started if isinstance(started, int | float) else -1.0
        fresh = 0 <= age <= ENROL_MAX_AGE.total_seconds()
        if fresh and isinstance(token, str):
            try:
                return decrypt(token)
            except DataKeyError:
                pass
    secret = new_totp_secret()
    cookie_session[_ENROL] = [operator_id, encrypt(secret), utcnow().timestamp()]
    return secret


def _qr_svg(uri: str) -> Markup:
    """The QR code of ``uri`` as inline SVG (drawn here: nothing from third parties, no
    script, nothing the Content-Security-Policy forbids)."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=5,
        dark="#000",
        light="#fff",
        title="QR code for your authenticator app",
        omitsize=True,  # a viewBox, so the page's CSS sizes it
    )
    return Markup(svg.replace("<svg ", '<svg role="img" aria-label="QR code" ', 1))


@bp.route("/2fa", methods=["GET", "POST"])
@requires(Role.ASSISTANT, during_enrolment=True)
def two_factor() -> ResponseReturnValue:
    """Set up two-factor sign-in: scan the QR code (or type the secret), confirm with a
    code; the ten recovery codes are shown once, on the answer to that."""
    operator_id = current_user.operator_id
    if current_user.has_totp:
        with state().read_sessions() as session:
            operator = session.get(Operator, operator_id)
            left = recovery_codes_left(operator) if operator is not None else 0
            since = operator.totp_enabled_at if operator is not None else None
        return render_template("web/admin/two_factor.html", enabled=True, left=left, since=since)
    secret = _enrol_secret(operator_id)
    form = CodeForm()
    error = None
    if form.validate_on_submit():
        now = utcnow()
        with state().sessions() as session, session.begin():
            codes = enable_totp(session, operator_id, secret, form.code.data or "", now)
            if codes is not None:
                audit.record(session, operator_id, Action.TOTP_ENROL, None, now)
        if codes is not None:
            cookie_session.pop(_ENROL, None)
            return render_template(
                "web/admin/two_factor.html", enabled=True, recovery_codes=codes, left=len(codes)
            )
        error = "That code didn't match. Check the time on your phone and try the next code."
    elif request.method == "POST":
        error = "Please type the six-digit code your app shows."
    uri = totp_uri(secret, current_user.email, state().settings.practice_name)
    return render_template(
        "web/admin/two_factor.html",
        enabled=False,
        form=form,
        error=error,
        qr=_qr_svg(uri),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
    ), 400 if error else 200


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


def _admin_course() -> PublishedCourse:
    """The course a page is about: ``?course=<slug>``, or the first course."""
    catalogue = state().courses.current()
    slug = request.args.get("course") or request.form.get("course")
    found = catalogue.by_slug(slug) if slug else next(iter(catalogue), None)
    if found is None:
        abort(404)
    return found


def _page_number() -> int:
    page = request.args.get("page", "1")
    return int(page) if re.fullmatch(r"[0-9]{1,5}", page) and int(page) > 0 else 1


@bp.get("/")
@requires(Role.ASSISTANT)
def dashboard() -> ResponseReturnValue:
    """All courses side by side (the default), or one course's funnel, per-lesson results
    and check-ins (``?course=<slug>``); the filters apply to both; sending health."""
    course = state()
    filters, errors = _filters()
    catalogue = course.courses.current()
    slug = request.args.get("course", "").strip()
    shown = catalogue.by_slug(slug) if slug else None
    if slug and shown is None:
        abort(404)
    live = [c for c in catalogue if c.version_id is not None]
    if not slug and len(live) == 1:
        shown = live[0]  # a practice with one course sees it at once, not a summary of one
    # The filters a course switcher link keeps.
    keep = {k: v for k in ("from", "to", "source") if (v := request.args.get(k, "").strip())}
    across = None
    steps: list[Any] = []
    lessons: list[Any] = []
    booked: list[BookingCounts] = []
    with course.read_sessions() as session:
        if shown is None:
            across = summary(session, filters, catalogue)
        else:
            filters = dataclasses.replace(filters, course_id=shown.id)
            titles = course_lessons(shown)
            steps = funnel(session, filters, titles)
            lessons = per_lesson(session, filters, titles)
            booked = bookings_by_lesson(session, filters)
        pulse = health(session, utcnow(), course.settings.tick_seconds)
        returns = deliverability(session, utcnow())
        sources = [
            s
            for s in session.scalars(
                select(Subscriber.source).where(Subscriber.source.is_not(None)).distinct()
            )
        ]
    current = [ls for ls in lessons if ls.position is not None]
    return render_template(
        "web/admin/dashboard.html",
        across=across,
        steps=steps,
        signed_up=(steps[0].count if steps else 0) or 1,
        lessons=current,
        elsewhere=[ls for ls in lessons if ls.position is None],
        bookings=_booking_rows(booked, lessons),
        booking_sources=BOOKING_SOURCES,
        health=pulse,
        returns=returns,
        filters=filters,
        errors=errors,
        keep=keep,
        sources=sorted(sources),
        funnel_chart=bar_chart([(s.label, s.count) for s in steps], "Course funnel")
        if shown
        else None,
        checkin_chart=stacked_bars(
            [(f"Lesson {ls.position}", [ls.checkins[k] for k in ls.checkins]) for ls in current],
            ["Lighter", "About the same", "Stirred things up"],
            "Check-in answers per lesson",
        )
        if shown
        else None,
        broken=[c for c in ([shown] if shown else catalogue) if c.content.errors],
        course=shown,
        courses=[c for c in catalogue if c.version_id is not None or c == shown],
    )


def _booking_rows(
    booked: list[BookingCounts], lessons: list[LessonStats]
) -> list[tuple[str, BookingCounts]]:
    """The bookings table: a row per lesson with clicks or bookings, named as in the
    lesson table, then the bookings no lesson led to."""
    names = {
        ls.lesson: f"{ls.position}. {ls.title}" if ls.position is not None else ls.title
        for ls in lessons
    }
    return [
        (names.get(r.lesson, f"Lesson #{r.lesson}") if r.lesson is not None else "No lesson", r)
        for r in booked
        if r.clicked or r.confirmed_total
    ]


# -- subscribers ----------------------------------------------------------------------------


@bp.get("/subscribers")
@requires(Role.ASSISTANT)
def subscribers() -> ResponseReturnValue:
    """Search by address or name, filter by status, 50 per page."""
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    page_no = _page_number()
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
@requires(Role.ASSISTANT)
def subscriber_detail(public_id: str) -> ResponseReturnValue:
    """One subscriber: their timeline of deliveries and events, and actions. Their notes
    and replies only for a role that reads them, and that view goes into the audit log."""
    reads_notes = current_user.can(Role.THERAPIST)
    with state().read_sessions() as session:
        subscriber = _subscriber(session, public_id)
        deliveries = session.scalars(
            select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
        ).all()
        events = session.scalars(
            select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id)
        ).all()
        progress_query = (
            select(LessonProgress)
            .where(LessonProgress.subscriber_id == subscriber.id)
            .order_by(LessonProgress.lesson)
        )
        if not reads_notes:
            # Never even decrypted for a role that must not read it.
            progress_query = progress_query.options(defer(LessonProgress.note, raiseload=True))
        progress = session.scalars(progress_query).all()
        replies = replies_of(session, subscriber) if reads_notes else []
        shown_private = reads_notes and (bool(replies) or any(p.note for p in progress))
        consent = consent_record(session, subscriber)
    if shown_private:
        now = utcnow()
        with state().sessions() as session, session.begin():
            audit.record(session, current_user.operator_id, Action.VIEW_NOTES, subscriber.id, now)
    # Replies are shown with their text to those who read them; others see only that the
    # reader replied (the event, which never holds text).
    timeline = sorted(
        [("delivery", d.sent_at or d.due_at, d) for d in deliveries]
        + [
            ("event", e.created_at, e)
            for e in events
            if not (reads_notes and e.kind == EventKind.REPLY)
        ]
        + [("reply", r.received_at, r) for r in replies],
        key=lambda item: item[1],
    )
    sent_lessons = sorted({d.number for d in deliveries if d.kind == "lesson" and d.sent_at})
    return render_template(
        "web/admin/subscriber.html",
        subscriber=subscriber,
        consent=consent,
        timeline=timeline,
        progress=progress,
        reads_notes=reads_notes,
        sent_lessons=sent_lessons,
        has_failed=any(
            d.kind == "lesson" and d.status == "failed" and not d.sent_at for d in deliveries
        ),
        statuses=SubscriberStatus,
        describe_event=lambda event: timeline_sentence(event, gettext),
        how_event=lambda event: timeline_how(event, gettext),
    )


@bp.post("/subscribers/<public_id>/<action>")
@requires(Role.ASSISTANT)
def subscriber_action(public_id: str, action: str) -> ResponseReturnValue:
    """Pause, resume, unsubscribe or re-send a lesson, as this operator."""
    course = state()
    operator_id = current_user.operator_id
    now = utcnow()
    with course.sessions() as session, session.begin():
        subscriber = _subscriber(session, public_id)
        if action == "pause":
            ok = pause(session, subscriber, now, via="admin", operator_id=operator_id)
            message = gettext("Paused.") if ok else gettext("Only an active course can be paused.")
        elif action == "resume":
            joined = course.courses.current(session).get(subscriber.course_id)
            ok = joined is not None and resume(
                session,
                subscriber,
                now,
                settings=course.settings,
                course=joined,
                via="admin",
                operator_id=operator_id,
            )
            message = (
                gettext("Resumed: one lesson at the next send hour.")
                if ok
                else gettext("Not paused.")
            )
        elif action == "unsubscribe":
            ok = unsubscribe(session, subscriber, now, via="admin", operator_id=operator_id)
            message = gettext("Unsubscribed.") if ok else gettext("Already unsubscribed.")
        elif action == "resend":
            lesson = request.form.get("lesson", "")
            number = parse_lesson_number(lesson)
            ok = number is not None and resend_lesson(session, subscriber, number, now, operator_id)
            message = (
                gettext("Lesson %(lesson)s will be sent again on the next tick.", lesson=lesson)
                if ok
                else gettext("Only a lesson this reader already received can be re-sent.")
            )
        elif action == "retry":
            number = retry_failed(session, subscriber, now, operator_id)
            ok = number is not None
            message = (
                gettext("Lesson %(lesson)s will be tried again on the next tick.", lesson=number)
                if ok
                else gettext("Nothing to retry: no failed lesson for an active reader.")
            )
        else:
            abort(404)
    flash(message, "notice" if ok else "alert")
    return redirect(url_for("admin.subscriber_detail", public_id=public_id), code=303)


@bp.post("/retry-failed")
@requires(Role.ASSISTANT)
def retry_all_failed() -> ResponseReturnValue:
    """Queue every stalled reader's failed lesson again (after the cause was fixed)."""
    operator_id = current_user.operator_id
    now = utcnow()
    with state().sessions() as session, session.begin():
        ids = list(session.scalars(stalled_readers()))
        retried = 0
        for subscriber in session.scalars(select(Subscriber).where(Subscriber.id.in_(ids))):
            retried += retry_failed(session, subscriber, now, operator_id) is not None
    flash(
        gettext("%(count)s lesson(s) will be tried again on the next tick.", count=retried),
        "notice",
    )
    return redirect(url_for("admin.dashboard"), code=303)


@bp.get("/subscribers/<public_id>/export.json")
@requires(Role.THERAPIST)
def subscriber_export(public_id: str) -> ResponseReturnValue:
    """The subscriber's data as JSON (for a data request): everything, notes and replies
    included, so only for roles that read notes (see the module docstring); audited."""
    now = utcnow()
    with state().sessions() as session, session.begin():
        subscriber = _subscriber(session, public_id)
        data = export_data(session, subscriber)
        record_event(
            session,
            subscriber,
            EventKind.EXPORT,
            now,
            via="admin",
            operator_id=current_user.operator_id,
        )
        audit.record(session, current_user.operator_id, Action.EXPORT, subscriber.id, now)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="subscriber-{public_id}.json"'},
    )


@bp.route("/subscribers/<public_id>/erase", methods=["GET", "POST"])
@requires(Role.ASSISTANT)
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
    flash(gettext("The subscriber and their personal data were erased."), "notice")
    return redirect(url_for("admin.subscribers"), code=303)


# -- needs a look ---------------------------------------------------------------------------


def _care_subscriber(session: Session, item: str) -> int | None:
    """The reader an item of the list is about, or None if there is no such item."""
    kind, _, number = item.partition(":")
    if not _NUMBER.fullmatch(number):
        return None
    if kind in ("checkin", "note"):
        return session.scalar(
            select(LessonProgress.subscriber_id).where(LessonProgress.id == int(number))
        )
    if kind == "reply":
        return session.scalar(select(Reply.subscriber_id).where(Reply.id == int(number)))
    return None


@bp.get("/care")
@requires(Role.THERAPIST)
def care() -> ResponseReturnValue:
    """The "Needs a look" list: stirred check-ins and notes or replies that matched a risk phrase,
    urgent and new ones first; each can be marked seen or contacted. Audited."""
    now = utcnow()
    with state().read_sessions() as session:
        items = needs_a_look(session, now, _phrases())
    with state().sessions() as session, session.begin():
        audit.record(
            session,
            current_user.operator_id,
            Action.VIEW_CARE,
            None,
            now,
            detail=f"{len(items)} item{'' if len(items) == 1 else 's'}",
        )
    return render_template("web/admin/care.html", items=items)


@bp.post("/care/mark")
@requires(Role.THERAPIST)
def care_mark() -> ResponseReturnValue:
    """Mark an item "seen" or "contacted", as this operator."""
    item = request.form.get("item", "")[:64]
    status = request.form.get("status", "")
    now = utcnow()
    with state().sessions() as session, session.begin():
        subscriber_id = _care_subscriber(session, item)
        if subscriber_id is None:
            abort(404)
        try:
            mark(session, item, status, current_user.operator_id, now)
        except ValueError:
            abort(400)
        audit.record(
            session,
            current_user.operator_id,
            Action.CARE_MARK,
            subscriber_id,
            now,
            detail=f"{item} {status}",
        )
    flash(gettext("Marked as %(status)s.", status=gettext(status)), "notice")
    return redirect(url_for("admin.care"), code=303)


# -- staff accounts (owners) ----------------------------------------------------------------

_ROLE_CHOICES = [(r.value, r.label) for r in (Role.ASSISTANT, Role.THERAPIST, Role.OWNER)]


def _known_timezone(_form: FlaskForm, field: StringField) -> None:
    if not may_choose(field.data or ""):
        raise ValidationError("Use a time zone name such as Europe/Berlin.")


def _known_role(_form: FlaskForm, field: StringField) -> None:
    if Role.parse(field.data) is None:
        raise ValidationError("Choose owner, therapist or assistant.")


class StaffForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    # A <select> drawn by the template (staff.html) from _ROLE_CHOICES.
    role = StringField("Role", default=Role.ASSISTANT.value, validators=[_known_role])
    timezone = StringField(
        "Time zone", default="UTC", validators=[DataRequired(), Length(max=64), _known_timezone]
    )
    password = PasswordField(
        "First password (at least 12 characters; tell them in person)",
        validators=[DataRequired(), Length(max=1000)],
    )


def _staff_page(form: StaffForm, status: int = 200) -> ResponseReturnValue:
    with state().read_sessions() as session:
        accounts = [
            (operator, role_of(operator), recovery_codes_left(operator))
            for operator in staff(session)
        ]
    return render_template(
        "web/admin/staff.html", accounts=accounts, form=form, roles=_ROLE_CHOICES
    ), status


@bp.get("/staff")
@requires(Role.OWNER)
def staff_list() -> ResponseReturnValue:
    """Staff accounts: who has which role and two-factor sign-in; create, change, remove."""
    return _staff_page(StaffForm())


@bp.post("/staff")
@requires(Role.OWNER)
def staff_create() -> ResponseReturnValue:
    """Create a staff account with a first password the owner hands over."""
    form = StaffForm()
    if not form.validate_on_submit():
        return _staff_page(form, 400)
    now = utcnow()
    try:
        with state().sessions() as session, session.begin():
            operator = create_operator(
                session,
                form.email.data or "",
                form.password.data or "",
                form.timezone.data or "UTC",
                role=form.role.data,
            )
            audit.record(
                session,
                current_user.operator_id,
                Action.STAFF_CREATE,
                None,
                now,
                detail=f"staff #{operator.id}: {operator.role}",
            )
            created = operator.email
    except OperatorError as exc:
        form.email.errors = [*form.email.errors, f"Cannot create the account: {exc}."]
        return _staff_page(form, 400)
    flash(f"Created {created}. Give them the first password in person.", "notice")
    return redirect(url_for("admin.staff_list"), code=303)


def _staff_change(operator_id: int, change: Callable[[Session], str]) -> ResponseReturnValue:
    """Run one change to a staff account; its message, or the reason it was refused."""
    try:
        with state().sessions() as session, session.begin():
            if session.get(Operator, operator_id) is None:
                abort(404)
            message = change(session)
    except OperatorError as exc:
        flash(f"Not changed: {exc}.", "alert")
    else:
        flash(message, "notice")
    return redirect(url_for("admin.staff_list"), code=303)


@bp.post("/staff/<int:operator_id>/role")
@requires(Role.OWNER)
def staff_role(operator_id: int) -> ResponseReturnValue:
    """Give a staff member another role (never leaves the practice without an owner)."""
    role = Role.parse(request.form.get("role", ""))
    if role is None:
        abort(400)

    def change(session: Session) -> str:
        operator = set_role(session, operator_id, role)
        audit.record(
            session,
            current_user.operator_id,
            Action.STAFF_ROLE,
            None,
            utcnow(),
            detail=f"staff #{operator_id}: {role.value}",
        )
        return f"{operator.email} is now {role.label.lower()}."

    return _staff_change(operator_id, change)


@bp.post("/staff/<int:operator_id>/reset-2fa")
@requires(Role.OWNER)
def staff_reset_2fa(operator_id: int) -> ResponseReturnValue:
    """Turn off a staff member's two-factor sign-in (a lost phone); their sessions end."""

    def change(session: Session) -> str:
        reset_totp(session, operator_id)
        audit.record(
            session,
            current_user.operator_id,
            Action.STAFF_RESET_2FA,
            None,
            utcnow(),
            detail=f"staff #{operator_id}",
        )
        return "Two-factor sign-in was reset; they set it up again at their next sign-in."

    return _staff_change(operator_id, change)


@bp.post("/staff/<int:operator_id>/remove")
@requires(Role.OWNER)
def staff_remove(operator_id: int) -> ResponseReturnValue:
    """Remove a staff account (never the last owner). What they did stays recorded."""

    def change(session: Session) -> str:
        email = remove_operator(session, operator_id)
        audit.record(
            session,
            current_user.operator_id,
            Action.STAFF_REMOVE,
            None,
            utcnow(),
            detail=f"staff #{operator_id}",
        )
        return f"Removed {email}."

    return _staff_change(operator_id, change)


@bp.get("/audit")
@requires(Role.OWNER)
def audit_log() -> ResponseReturnValue:
    """Who read readers' notes and replies, and who changed staff: newest first."""
    page_no = _page_number()
    with state().read_sessions() as session:
        rows, count = audit.entries(session, page_no, PAGE_SIZE)
    pages = max(1, (count + PAGE_SIZE - 1) // PAGE_SIZE)
    return render_template(
        "web/admin/audit.html", rows=rows, count=count, page=page_no, pages=pages
    )


# -- lessons --------------------------------------------------------------------------------
# The lessons are edited, previewed and test-sent in the course editor
# (course.web.admin_courses); these addresses of the earlier read-only pages lead there.


@bp.get("/lessons")
@requires(Role.ASSISTANT)
def lessons() -> ResponseReturnValue:
    """The lessons of a course (``?course=<slug>``, or the first): the course editor."""
    return redirect(url_for("admin.course_detail", slug=_admin_course().slug, _anchor="lessons"))


@bp.get("/lessons/<int:key>")
@requires(Role.ASSISTANT)
def lesson_detail(key: int) -> ResponseReturnValue:
    """A lesson of a course: its page in the course editor."""
    return redirect(url_for("admin.course_lesson", slug=_admin_course().slug, key=key))


@bp.post("/lessons/<int:key>/test")
@requires(Role.ASSISTANT)
def lesson_test(key: int) -> ResponseReturnValue:
    """The lesson's "Send me a test": the course editor's (307 keeps the method and form)."""
    slug = _admin_course().slug
    return redirect(url_for("admin.course_test", slug=slug, kind="lesson", key=key), code=307)
