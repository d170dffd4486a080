"""The public pages: the hosted signup page, the signup endpoint and the confirmation link.

``POST /subscribe`` sits on the open internet, so it is guarded in layers:

- **Where it comes from.** A form posted from our own page must carry its CSRF token. A
  form posted from one of ``COURSE_ALLOWED_ORIGINS`` (the practice's own site) needs none:
  its ``Origin`` is the proof. Any other ``Origin`` (or ``Referer``) is refused with 403. JSON
  needs no token (a cross-origin JSON post needs a CORS preflight, which only allowed
  origins get) but a foreign ``Origin`` is refused as well.
- **How often.** Rate limits per client address and per target address (see
  :func:`subscribe_limits`), and at most a few confirmation emails per address a day
  (``course.subscriptions.subscribe``).
- **Who fills it in.** A hidden honeypot field and a signed time stamp: a bot that fills in
  every field, or posts faster than a person can type, gets the same answer as a person and
  nothing is stored. A form without the stamp (the practice's own) is not a bot for that.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import (
    Blueprint,
    Flask,
    Response,
    after_this_request,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError

from course.config import Settings
from course.courses import PublishedCourse
from course.extensions import state
from course.i18n import (
    N_,
    page_language,
    setting_text,
    translate_message,
    use_course_language,
    use_language,
)
from course.models import SubscriberStatus, utcnow
from course.security import (
    form_age,
    form_stamp,
    own_origin,
    request_origin,
    safe_next_url,
)
from course.signups import decide_signups
from course.subscriptions import (
    Consent,
    SignupData,
    ValidationFailed,
    by_public_id,
    confirm,
    consent_text_hash,
    store_signup_request,
    validate_signup,
)
from course.tokens import InvalidToken
from course.web.errors import error_response
from course.web.ratelimits import RateLimit, limit_endpoint

bp = Blueprint("public", __name__)
log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Register the public pages and the signup's rate limits."""
    from course.extensions import csrf

    app.register_blueprint(bp)
    # The signup endpoint checks CSRF itself: our own form must carry the token, a form
    # from an allowed origin is vouched for by its Origin header (see subscribe_view).
    csrf.exempt(subscribe_view)
    # The confirmation's token is its credential, like the reader's other links.
    csrf.exempt(confirm_view)
    settings = app.extensions["course"].settings
    limit_endpoint(app, "public.subscribe_view", subscribe_limits(settings))


#: The same words for every successful signup, new or known, so the response never tells
#: whether an address is already enrolled. The messages here are English (for the JSON
#: API) and marked for the catalogs: pages show them translated (course.web.errors and the
#: form's ``translated`` filter).
SIGNUP_MESSAGE = N_(
    "Thank you. Please check your inbox: we've sent you an email with a link to confirm "
    "your address. Your first lesson arrives as soon as you confirm."
)
FORM_FIELDS = ("email", "name", "timezone", "source", "course")
NO_COURSE = N_("There is no course with that name open for signups.")
#: The hidden field people never see and bots fill in.
HONEYPOT = "website"
#: The hosted form's signed time stamp (``course.security.form_stamp``).
STAMP = "started"
#: Where a form signup from the practice's site goes afterwards (an allowed origin only).
NEXT = "next"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

FOREIGN_ORIGIN = N_(
    "Signups are not accepted from this website. The course's operator can allow a site "
    "with COURSE_ALLOWED_ORIGINS."
)
BAD_NEXT = N_(
    "The form's 'next' address is not allowed. It must be a page on one of the sites listed "
    "in COURSE_ALLOWED_ORIGINS."
)
#: Shown when our form comes back without a valid CSRF token: it expired (after 8 hours),
#: the visitor's cookies were cleared, or it was posted from a page that hides its origin.
FORM_EXPIRED = N_("For your security, please check your details and send the form once more.")
BAD_ENCODING = N_("contains characters that could not be read (the form must be sent as UTF-8)")
#: The start of an RFC 2047 encoded word (``=?utf-8?q?...?=``). Mail software decodes these
#: inside headers, so in a name or address one can smuggle CR/LF into the To header
#: (CPython before 3.11.10 / 3.12.5 even writes it out as a new header line: CVE-2024-6923).
#: No real name or address contains it.
ENCODED_WORD = "=?"


def subscribe_limits(settings: Settings) -> tuple[RateLimit, ...]:
    """Rate limits for ``POST /subscribe``: per client address, and a stricter one for
    JSON from clients that name no allowed origin (scripts, not the practice's website).

    There is deliberately no limit per target address that answers 429: it would let
    anyone block a person's own signup by sending requests for their address. How many
    confirmation emails an address gets is capped when the request is decided instead
    (``course.subscriptions.ConfirmationCaps``), and the answer never changes.
    """
    return (
        RateLimit(settings.subscribe_limit_per_client),
        RateLimit(
            settings.subscribe_limit_without_origin,
            scope="subscribe-without-origin",
            exempt_when=_from_a_known_page,
        ),
    )


def _from_a_known_page() -> bool:
    """True unless this is JSON from a client that names no allowed origin."""
    if not request.is_json:
        return True  # forms: our own (with its CSRF token) or an allowed site's
    origin = request_origin()
    return origin is not None and origin in state().settings.allowed_origins


@bp.get("/")
def index() -> ResponseReturnValue:
    """The hosted signup page of the only open course, or the list of open courses (works
    without JavaScript)."""
    open_courses = state().courses.current().open()
    if len(open_courses) > 1:
        # The list speaks the courses' language when they share one (each course's own
        # card says which language it is in otherwise: see courses.html).
        languages = {course.language for course in open_courses}
        use_language(languages.pop() if len(languages) == 1 else None)
        return render_template(
            "web/courses.html", courses=open_courses, source=request.args.get("source", "")[:64]
        )
    return _form_page({"source": request.args.get("source", "")[:64]}, {})


@bp.get("/c/<slug>")
def course_page(slug: str) -> ResponseReturnValue:
    """One course's own signup page."""
    course = state().courses.current().by_slug(slug)
    if course is None or not course.open_for_signup:
        return error_response(404, NO_COURSE)
    values = {"source": request.args.get("source", "")[:64], "course": course.slug}
    return _form_page(values, {})


@bp.get("/thanks")
def thanks() -> ResponseReturnValue:
    """Where the signup form lands after a successful post (in the language of the form
    the visitor sent: :func:`_form_page` keeps it in the session)."""
    use_language(session.get(FORM_LANGUAGE))
    return render_template(
        "web/thanks.html", message=translate_message(SIGNUP_MESSAGE, page_language())
    )


@bp.route("/subscribe", methods=["POST", "OPTIONS"])
def subscribe_view() -> ResponseReturnValue:
    """Sign up from an HTML form or a JSON body (and answer CORS preflights)."""
    settings = state().settings
    origin = request_origin()
    ours = own_origin(settings)
    trusted = origin is not None and origin in settings.allowed_origins
    if request.method == "OPTIONS":
        return _preflight(origin, trusted)
    if origin not in (None, "null", ours) and not trusted:
        return error_response(403, FOREIGN_ORIGIN)
    is_json = request.is_json
    next_url = None
    undecodable: set[str] = set()
    if is_json:
        if origin == "null":  # an opaque origin (a sandboxed frame) is nobody we know
            return error_response(403, FOREIGN_ORIGIN)
        data = _json_body()
        if not isinstance(data, dict):
            return error_response(400, "The body must be a JSON object.", fields={})
    elif request.mimetype in FORM_TYPES:
        undecodable = _undecodable_form_fields()  # reads the raw body before the form
        data = {key: request.form.get(key) for key in (*FORM_FIELDS, HONEYPOT, STAMP, NEXT)}
        if data[NEXT]:
            next_url = safe_next_url(data[NEXT], (*settings.allowed_origins, ours))
            if next_url is None:
                return error_response(400, BAD_NEXT)
        # A form from an allowed origin is vouched for by its Origin. Our own hosted form
        # (whose Origin is "null" because of Referrer-Policy: no-referrer) and clients
        # that name no origin must show the CSRF token.
        if not trusted and not _csrf_token_ok():
            return _form_page(_values(data), {"form": FORM_EXPIRED}, status=400, next_url=next_url)
    else:
        return error_response(
            415, "Send the signup as a web form or as JSON (Content-Type: application/json)."
        )
    try:
        problems = _field_problems(data, undecodable)
        joining = _course_named(data.get("course"))
        if joining is None:
            problems["course"] = NO_COURSE
        if problems:
            raise ValidationFailed(problems)
        assert joining is not None
        signup = validate_signup(data, check_deliverability=settings.check_deliverability)
        signup = dataclasses.replace(signup, course_id=joining.id)
    except ValidationFailed as exc:
        if is_json:
            return jsonify(error="Please check the highlighted fields.", fields=exc.errors), 400
        return _form_page(_values(data), exc.errors, status=400, next_url=next_url)
    bot = _bot_reason(data, settings, hosted=not is_json and not trusted)
    if bot:
        # The same answer as for a person, and nothing stored: a bot learns nothing.
        log.info("signup dropped reason=%s", bot)
    else:
        source = "api" if is_json else ("website" if trusted else "hosted")
        consent = Consent(
            source=source,
            origin=origin
            if source != "hosted" and origin not in (None, "null", "invalid")
            else None,
            # The wording the form showed: in the course's language (course.signups keeps
            # each language's text for the consent record).
            text_hash=consent_text_hash(
                setting_text(settings, "signup_consent_text", joining.language)
            ),
        )
        _record_signup(dataclasses.replace(signup, consent=consent))
    if is_json:
        return jsonify(status="ok", message=SIGNUP_MESSAGE), 202
    return redirect(next_url or url_for("public.thanks"), code=303)


def _course_named(slug: object) -> PublishedCourse | None:
    """The open course a signup names (none: the default course), or None."""
    catalogue = state().courses.recent()
    if slug in (None, ""):
        return catalogue.default()
    found = catalogue.by_slug(slug) if isinstance(slug, str) else None
    return found if found is not None and found.open_for_signup else None


def _json_body() -> object:
    """The JSON body, or None when it is not JSON (bad syntax, not UTF-8, nested too deep)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:  # "[[[[..." 50,000 deep: json gives up with RecursionError
        return None


def _undecodable_form_fields() -> set[str]:
    """Names of urlencoded form fields whose bytes are not UTF-8.

    Werkzeug keeps such bytes as ``%XX`` text, which would be stored as a garbled name;
    they are refused instead. (Multipart fields come with U+FFFD, caught later.)
    """
    if request.mimetype != "application/x-www-form-urlencoded":
        return set()
    bad: set[str] = set()
    for pair in request.get_data(cache=True).split(b"&"):
        raw_key, _, raw_value = pair.partition(b"=")
        try:
            key = unquote_to_bytes(raw_key.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            continue  # not a field we read
        try:
            unquote_to_bytes(raw_value.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            bad.add(key)
    return bad


def _csrf_token_ok() -> bool:
    """Whether the form carries a valid CSRF token for this visitor's session."""
    from course.extensions import csrf

    try:
        csrf.protect()
    except CSRFError:
        return False
    return True


def _preflight(origin: str | None, trusted: bool) -> ResponseReturnValue:
    """Answer a CORS preflight: allowed origins may POST JSON; others are refused."""
    if origin is None:  # a plain OPTIONS request, not a browser's preflight
        return Response(status=204, headers={"Allow": "POST, OPTIONS"})
    if not trusted:
        return error_response(403, FOREIGN_ORIGIN)
    return Response(
        status=204,
        headers={
            "Allow": "POST, OPTIONS",
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type, Accept",
            "Access-Control-Max-Age": "600",
        },
    )


@bp.after_request
def _cors_headers(response: Response) -> Response:
    """Let an allowed origin read the answer to its signup (errors and 429 included)."""
    if request.endpoint != "public.subscribe_view":
        return response
    response.vary.add("Origin")
    origin = request_origin() if request.headers.get("Origin") else None
    if origin is not None and origin in state().settings.allowed_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        # So the practice's script can tell a visitor how long to wait after a 429.
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


def _values(data: dict[str, Any]) -> dict[str, str]:
    """Form values to show again (never the honeypot, the stamp or the token)."""
    return {k: v for k, v in data.items() if k in FORM_FIELDS and isinstance(v, str)}


def _field_problems(data: dict[str, Any], undecodable: set[str]) -> dict[str, str]:
    """What ``validate_signup`` does not check: unreadable bytes and encoded words."""
    problems: dict[str, str] = {}
    for key in FORM_FIELDS:
        value = data.get(key)
        if not isinstance(value, str):
            continue
        if key in undecodable or "\ufffd" in value:
            problems[key] = BAD_ENCODING
        elif ENCODED_WORD in value:
            problems[key] = N_("contains characters that are not allowed")
    return problems


def _bot_reason(data: dict[str, Any], settings: Settings, *, hosted: bool) -> str | None:
    """Why this signup looks like a bot's, or None. ``hosted``: the form is ours (it had to
    show our CSRF token), so it must also carry the time stamp we put in it."""
    if data.get(HONEYPOT):
        return "honeypot"
    stamp = data.get(STAMP)
    if stamp in (None, ""):
        # The practice's own form on its site has no stamp; ours always has one.
        return "no-stamp" if hosted else None
    age = form_age(settings.secret_keys, stamp)
    if age is None:
        return "bad-stamp"  # a browser sends back what we gave it; only a program edits it
    if age < settings.min_signup_seconds:
        return "too-fast"
    # However old a stamp is (a tab left open overnight), it is a person's: a bot that
    # replays one still needs a fresh CSRF token and session for each post.
    return None


NOTHING_OPEN = N_("No course is open for signups yet. Please come back soon.")
#: The session key of the language the visitor's signup form was in.
FORM_LANGUAGE = "form_language"


def _form_page(
    values: dict[str, str],
    errors: dict[str, str],
    *,
    status: int = 200,
    next_url: str | None = None,
) -> ResponseReturnValue:
    """The hosted form of one course, with a fresh time stamp (and CSRF token, added by
    the template)."""
    app_state = state()
    joining = _course_named(values.get("course")) or app_state.courses.current().default()
    if joining is None:
        return error_response(503, NOTHING_OPEN)
    language = use_course_language(joining)
    session[FORM_LANGUAGE] = language  # for the thanks page after the post
    content = joining.content
    page = render_template(
        "web/index.html",
        values=values,
        errors=errors,
        stamp=form_stamp(app_state.settings.secret_keys),
        next_url=next_url,
        course=joining,
        total=content.total,
        lessons=[lesson for key in content.order if (lesson := content.get(key))],
        # The exact wording kept with each reader's consent record (consent_texts).
        consent_text=setting_text(app_state.settings, "signup_consent_text", language),
    )
    return page, status


def _record_signup(signup: SignupData) -> None:
    """Store the signup, and decide it once the answer has been sent.

    Storing is one insert, the same for every address, so the answer's timing cannot tell
    whether an address is known. The decision (a new reader, a repeat, someone coming back)
    runs after the response has gone out; if this process dies first, the next scheduler
    tick decides it (``course.scheduler``). Nothing is lost either way.
    """
    course = state()
    # One autocommitted insert: no BEGIN and COMMIT round trips around it.
    with course.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
        request_id = store_signup_request(db, signup, utcnow())

    @after_this_request
    def _decide_later(response: Response) -> Response:
        response.call_on_close(
            lambda: decide_signups(course.sessions, course.settings, request_id=request_id)
        )
        return response


CONFIRM_INVALID = N_(
    "This confirmation link isn't valid or has expired. You can sign up again on the course "
    "page; it only takes a moment."
)
CONFIRM_GONE = N_(
    "We couldn't find this signup. It may have been removed; you're welcome to sign up again."
)


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm_view(token: str) -> ResponseReturnValue:
    """Consent needs a person: GET shows one button, only its POST confirms.

    Mail scanners and link previews fetch every link in a message (GET, sometimes HEAD),
    so a GET that confirmed would let anyone enrol an address that sits behind such a
    scanner. A person needs exactly one more click, and no JavaScript: the page is a plain
    form. The token is the credential (as for the reader's other links), so no CSRF token
    is needed: a forged POST would need the token itself.
    """
    course = state()
    try:
        payload = course.signer.loads("confirm", token)
    except InvalidToken:
        return error_response(400, CONFIRM_INVALID)
    public_id = payload[0]
    number = payload[1] if len(payload) > 1 and isinstance(payload[1], int) else None
    if request.method == "POST":
        with course.sessions() as session, session.begin():
            subscriber = confirm(
                session,
                public_id,
                utcnow(),
                number,
                secret_keys=course.settings.secret_keys,
                courses=course.courses.current(session),
                settings=course.settings,
            )
            if subscriber is None:
                return error_response(404, CONFIRM_GONE)
            status = subscriber.status
            joining = course.courses.current(session).get(subscriber.course_id)
        use_course_language(joining)
        return render_template(
            "web/confirmed.html",
            status=status,
            statuses=SubscriberStatus,
            starts_now=_starts_now(joining),
        )
    with course.read_sessions() as session:
        subscriber = by_public_id(session, public_id)
        if subscriber is None:
            return error_response(404, CONFIRM_GONE)
        status = subscriber.status
        joining = course.courses.current(session).get(subscriber.course_id)
    use_course_language(joining)
    return render_template(
        "web/confirm.html",
        status=status,
        statuses=SubscriberStatus,
        token=token,
        course=joining,
        total=joining.content.total if joining else 0,
        starts_now=_starts_now(joining),
    )


def _starts_now(course: PublishedCourse | None) -> bool:
    """Whether a reader who confirms gets the first lesson at once (its delay is 0)."""
    if course is None or not course.content.order:
        return True
    first = course.content.get(course.content.order[0])
    return first is None or first.delay_days == 0
