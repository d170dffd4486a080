"""The booking systems' webhooks: Cal.com, Calendly, and a generic one for any other.

Each endpoint exists only when its secret is set (404 otherwise), and checks the signature
as its provider documents it, on the raw body, before reading anything else:

- ``POST /webhooks/bookings/calcom``: ``X-Cal-Signature-256`` is the hex HMAC-SHA256 of
  the body with the webhook's secret (``COURSE_CALCOM_WEBHOOK_SECRET``). Cal.com signs no
  time: a replayed call can only repeat a report, which records nothing twice.
- ``POST /webhooks/bookings/calendly``: ``Calendly-Webhook-Signature: t=<unix>,v1=<hex>``,
  the HMAC-SHA256 of ``"<t>.<body>"`` with the subscription's signing key
  (``COURSE_CALENDLY_SIGNING_KEY``); a ``t`` more than five minutes away is refused.
- ``POST /webhooks/bookings/generic``: ``X-Course-Timestamp: <unix>`` and
  ``X-Course-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` with
  ``COURSE_BOOKING_WEBHOOK_SECRET``; the same five minutes. The body is documented in
  docs/operators.md.

A call that does not verify gets 401 and records nothing; a body that is not JSON, or a
known event without a booking id, gets 400; an event we do not use (Cal.com's ``PING``,
``MEETING_ENDED``...) gets 200 and is ignored. What a verified report does is
``course.bookings.record_booking``'s business.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from datetime import timedelta
from hashlib import sha256
from typing import Any

from flask import Blueprint, Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from course.bookings import (
    REF_PARAM,
    BookingKind,
    BookingNotice,
    first_email,
    record_booking,
    text_of,
)
from course.extensions import state
from course.models import utcnow
from course.web.errors import error_response
from course.web.ratelimits import RateLimit, limit_endpoint

bp = Blueprint("bookings", __name__, url_prefix="/webhooks/bookings")

#: How far a signed time may be from ours: further away, the call is a replay.
MAX_AGE_SECONDS = 300
#: Per client address: far above what a booking system sends, a brake on anyone else.
LIMITS = (RateLimit("120 per minute"),)

CALCOM_SIGNATURE = "X-Cal-Signature-256"
CALENDLY_SIGNATURE = "Calendly-Webhook-Signature"
GENERIC_SIGNATURE = "X-Course-Signature"
GENERIC_TIMESTAMP = "X-Course-Timestamp"


def init_app(app: Flask) -> None:
    """Register the booking webhooks. Signed calls carry no CSRF token: the signature is
    the proof."""
    from course.extensions import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)
    for endpoint in ("calcom", "calendly", "generic"):
        limit_endpoint(app, f"bookings.{endpoint}", LIMITS)


def _refuse() -> ResponseReturnValue:
    return error_response(401, "The call could not be verified.")


def _signed(key: str, message: bytes, given: str) -> bool:
    expected = hmac.new(key.encode(), message, sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def _recent(timestamp: str) -> bool:
    try:
        return abs(time.time() - int(timestamp)) <= MAX_AGE_SECONDS
    except ValueError:
        return False


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        abort(400)
    if not isinstance(body, dict):
        abort(400)
    return body


def _section(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


def _apply(notice: BookingNotice | None) -> ResponseReturnValue:
    """Record a verified notice (None: an event we do not use) and say what happened."""
    if notice is None:
        return jsonify(status="ignored")
    course = state()
    window = timedelta(days=course.settings.booking_attribution_days)
    try:
        with course.sessions() as session, session.begin():
            outcome = record_booking(session, notice, utcnow(), signer=course.signer, window=window)
    except IntegrityError:
        # The same report, delivered twice at once: the other copy recorded it.
        outcome = "duplicate"
    return jsonify(status=outcome)


def _needs_id(value: object) -> str:
    found = text_of(value)
    if found is None:
        abort(400)
    return found


# -- Cal.com ------------------------------------------------------------------------------------

_CALCOM_KINDS = {
    "BOOKING_CREATED": BookingKind.CONFIRMED,
    "BOOKING_CANCELLED": BookingKind.CANCELLED,
    "BOOKING_RESCHEDULED": BookingKind.RESCHEDULED,
}


@bp.post("/calcom")
def calcom() -> ResponseReturnValue:
    """Cal.com's booking webhook (created, cancelled, rescheduled)."""
    secret = state().settings.calcom_webhook_secret
    if secret is None:
        abort(404)
    raw = request.get_data(cache=False)
    given = request.headers.get(CALCOM_SIGNATURE, "")
    if not given or not _signed(secret.get_secret_value(), raw, given):
        return _refuse()
    body = _json_object(raw)
    kind = _CALCOM_KINDS.get(str(body.get("triggerEvent")))
    if kind is None:
        return _apply(None)
    payload = _section(body, "payload")
    metadata = _section(payload, "metadata")
    return _apply(
        BookingNotice(
            source="cal.com",
            kind=kind,
            booking_id=_needs_id(payload.get("uid")),
            email=first_email(payload.get("attendees"))
            or text_of(_section(_section(payload, "responses"), "email").get("value"), 320),
            ref=text_of(metadata.get(REF_PARAM), 512),
            previous_id=text_of(payload.get("rescheduleUid"))
            if kind == BookingKind.RESCHEDULED
            else None,
        )
    )


# -- Calendly -----------------------------------------------------------------------------------


def _calendly_header(value: str) -> tuple[str, str] | None:
    """``t`` and ``v1`` from ``t=<unix>,v1=<hex>``."""
    parts: dict[str, str] = {}
    for item in value.split(","):
        name, _, found = item.strip().partition("=")
        parts.setdefault(name, found)
    t, v1 = parts.get("t"), parts.get("v1")
    return (t, v1) if t and v1 else None


@bp.post("/calendly")
def calendly() -> ResponseReturnValue:
    """Calendly's webhook subscription (invitee.created, invitee.canceled)."""
    key = state().settings.calendly_signing_key
    if key is None:
        abort(404)
    raw = request.get_data(cache=False)
    header = _calendly_header(request.headers.get(CALENDLY_SIGNATURE, ""))
    if header is None:
        return _refuse()
    timestamp, given = header
    if not _recent(timestamp) or not _signed(
        key.get_secret_value(), timestamp.encode() + b"." + raw, given
    ):
        return _refuse()
    body = _json_object(raw)
    event = body.get("event")
    if event not in ("invitee.created", "invitee.canceled"):
        return _apply(None)
    payload = _section(body, "payload")
    uri = _needs_id(payload.get("uri"))
    email = text_of(payload.get("email"), 320)
    ref = text_of(_section(payload, "tracking").get("utm_content"), 512)
    if event == "invitee.created":
        old = text_of(payload.get("old_invitee"))
        kind = BookingKind.RESCHEDULED if old else BookingKind.CONFIRMED
        notice = BookingNotice("calendly", kind, uri, email, ref, previous_id=old)
    elif payload.get("rescheduled") is True:
        # Calendly reports a reschedule twice: this half names the new invitee.
        new = text_of(payload.get("new_invitee"))
        notice = BookingNotice(
            "calendly", BookingKind.RESCHEDULED, new or uri, email, ref, previous_id=uri
        )
    else:
        notice = BookingNotice("calendly", BookingKind.CANCELLED, uri, email, ref)
    return _apply(notice)


# -- any other booking system -------------------------------------------------------------------

_GENERIC_KINDS = {
    "booking.confirmed": BookingKind.CONFIRMED,
    "booking.cancelled": BookingKind.CANCELLED,
    "booking.rescheduled": BookingKind.RESCHEDULED,
}


@bp.post("/generic")
def generic() -> ResponseReturnValue:
    """The documented webhook for any other booking system (docs/operators.md)."""
    secret = state().settings.booking_webhook_secret
    if secret is None:
        abort(404)
    raw = request.get_data(cache=False)
    timestamp = request.headers.get(GENERIC_TIMESTAMP, "").strip()
    given = request.headers.get(GENERIC_SIGNATURE, "").strip()
    if not timestamp or not given.startswith("sha256=") or not _recent(timestamp):
        return _refuse()
    if not _signed(secret.get_secret_value(), timestamp.encode() + b"." + raw, given[7:]):
        return _refuse()
    body = _json_object(raw)
    kind = _GENERIC_KINDS.get(str(body.get("event")))
    if kind is None:
        return _apply(None)
    return _apply(
        BookingNotice(
            source="generic",
            kind=kind,
            booking_id=_needs_id(body.get("id")),
            email=text_of(body.get("email"), 320),
            ref=text_of(body.get("ref"), 512),
            previous_id=text_of(body.get("previous_id")),
        )
    )
