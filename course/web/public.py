"""The public pages: the hosted signup page, the signup endpoint and the confirmation link."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from course.app import state
from course.models import SubscriberStatus, utcnow
from course.subscriptions import (
    SignupData,
    ValidationFailed,
    confirm,
    subscribe,
    validate_signup,
)
from course.tokens import InvalidToken
from course.web.errors import error_response

bp = Blueprint("public", __name__)

#: The same words for every successful signup, new or known, so the response never tells
#: whether an address is already enrolled.
SIGNUP_MESSAGE = (
    "Thank you. Please check your inbox: we've sent you an email with a link to confirm "
    "your address. Your first lesson arrives as soon as you confirm."
)
FORM_FIELDS = ("email", "name", "timezone", "source")


@bp.get("/")
def index() -> ResponseReturnValue:
    """The hosted signup page (works without JavaScript)."""
    return render_template(
        "web/index.html",
        values={"source": request.args.get("source", "")[:64]},
        errors={},
        **_course_outline(),
    )


@bp.get("/thanks")
def thanks() -> ResponseReturnValue:
    """Where the signup form lands after a successful post."""
    return render_template("web/thanks.html", message=SIGNUP_MESSAGE)


@bp.post("/subscribe")
def subscribe_view() -> ResponseReturnValue:
    """Sign up from an HTML form or a JSON body."""
    is_json = request.is_json
    if is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return error_response(400, "The body must be a JSON object.", fields={})
    elif request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = {key: request.form.get(key) for key in FORM_FIELDS}
    else:
        return error_response(
            415, "Send the signup as a web form or as JSON (Content-Type: application/json)."
        )
    settings = state().settings
    try:
        signup = validate_signup(data, check_deliverability=settings.check_deliverability)
    except ValidationFailed as exc:
        if is_json:
            return jsonify(error="Please check the highlighted fields.", fields=exc.errors), 400
        values = {k: v if isinstance(v, str) else "" for k, v in data.items()}
        return (
            render_template(
                "web/index.html", values=values, errors=exc.errors, **_course_outline()
            ),
            400,
        )
    _record_signup(signup)
    if is_json:
        return jsonify(status="ok", message=SIGNUP_MESSAGE), 202
    return redirect(url_for("public.thanks"), code=303)


def _record_signup(signup: SignupData) -> None:
    """Store the signup; a concurrent signup of the same address simply wins the race."""
    course = state()
    for attempt in (1, 2):
        try:
            with course.sessions() as session, session.begin():
                subscribe(
                    session,
                    signup,
                    now=utcnow(),
                    default_timezone=course.settings.default_timezone,
                    resend_after=timedelta(seconds=course.settings.confirm_resend_seconds),
                )
            return
        except IntegrityError:
            # Another request inserted the same address between our lookup and insert;
            # the second pass finds that row and treats this as a repeat signup.
            if attempt == 2:
                raise


@bp.get("/confirm/<token>")
def confirm_view(token: str) -> ResponseReturnValue:
    """Confirm the address and start the course."""
    course = state()
    try:
        public_id = course.signer.loads("confirm", token)[0]
    except InvalidToken:
        return error_response(
            400,
            "This confirmation link isn't valid or has expired. You can sign up again on "
            "the course page; it only takes a moment.",
        )
    with course.sessions() as session, session.begin():
        subscriber = confirm(session, public_id, utcnow())
        if subscriber is None:
            return error_response(
                404,
                "We couldn't find this signup. It may have been removed; you're welcome to "
                "sign up again.",
            )
        status = subscriber.status
    return render_template("web/confirmed.html", status=status, statuses=SubscriberStatus)


def _course_outline() -> dict[str, object]:
    lessons = state().lessons.current()
    return {
        "total": lessons.total,
        "lessons": [lessons.lessons[d] for d in sorted(lessons.lessons)],
    }
