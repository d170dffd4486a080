"""Error responses: a calm page for people, a small JSON object for programs."""

from __future__ import annotations

from flask import jsonify, make_response, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from course.i18n import N_, page_language, translate_message

# Written in English and translated on the page (programs get the English JSON).
MESSAGES = {
    400: N_("Something in that request wasn't quite right."),
    404: N_("We couldn't find that page."),
    405: N_("That page can't be used this way."),
    413: N_("That was more data than this form accepts."),
    415: N_("Please send the form as a web form or as JSON."),
    429: N_("Too many attempts. Please wait a little and try again."),
}
SOMETHING_WRONG = N_("Something went wrong.")


def wants_json() -> bool:
    """True when the client sent or asked for JSON rather than a page."""
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, message: str, **extra: object) -> ResponseReturnValue:
    """Render an error as a page (in the page's language) or as JSON, with ``status``."""
    if wants_json():
        return jsonify(error=message, **extra), status
    shown = translate_message(str(message), page_language())
    return render_template("web/error.html", status=status, message=shown), status


def handle_http_error(exc: HTTPException) -> ResponseReturnValue:
    """Every HTTP error the app raises goes through here."""
    status = exc.code or 500
    message = MESSAGES.get(status) or exc.description or SOMETHING_WRONG
    response = make_response(error_response(status, message))
    allow = exc.get_response().headers.get("Allow")
    if status == 405 and allow:
        response.headers["Allow"] = allow
    return response
