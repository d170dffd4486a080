"""Mail providers' webhooks: bounces and complaints reported by Mailgun, SendGrid or Postmark.

A practice that sends through one of these providers can let it report bounces and spam
complaints here instead of (or as well as) a bounce mailbox. Each endpoint exists only when
its secret is set, and refuses any call whose signature or credentials do not verify, as
the provider documents it, before reading anything else:

- ``POST /webhooks/mailgun``: HMAC-SHA256 of ``timestamp + token`` with the webhook signing
  key (``COURSE_MAILGUN_SIGNING_KEY``); a timestamp older than five minutes, or a token seen
  before, is a replay and refused.
- ``POST /webhooks/sendgrid``: the Signed Event Webhook, an ECDSA (P-256, SHA-256)
  signature over ``timestamp + body`` checked with the verification key
  (``COURSE_SENDGRID_VERIFICATION_KEY``); an old timestamp is refused.
- ``POST /webhooks/postmark``: HTTP basic authentication with the credentials put in the
  webhook's URL (``COURSE_POSTMARK_WEBHOOK_AUTH``); Postmark does not sign its calls.

Every event becomes a :class:`course.feedback.Feedback` and goes through the same
``course.bounces.apply_feedback`` as a message from the bounce mailbox, once: the provider's
event id is remembered (``inbound_messages``), so a retried call applies nothing twice.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Iterable
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue

from course.bounces import apply_feedback
from course.extensions import state
from course.feedback import Feedback, FeedbackKind
from course.models import InboundMessage, utcnow
from course.web.errors import error_response

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

#: How old a signed call may be: older ones are replays.
MAX_AGE_SECONDS = 300
#: The biggest call accepted (a SendGrid batch of events is at most a few hundred KB).
MAX_BODY = 1024 * 1024


def init_app(app: Flask) -> None:
    """Register the webhooks. Signed calls carry no CSRF token: the signature is the proof."""
    from course.extensions import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)


def _refuse(status: int = 401) -> ResponseReturnValue:
    return error_response(status, "The call could not be verified.")


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        abort(400)


def _apply(source: str, events: Iterable[tuple[str, Feedback]]) -> ResponseReturnValue:
    """Apply verified events once each; answer with how many were applied."""
    course = state()
    settings = course.settings
    applied = 0
    for event_id, feedback in events:
        key = f"{source}:{sha256(event_id.encode()).hexdigest()[:64]}"
        with course.sessions() as session, session.begin():
            if session.get(InboundMessage, key) is not None:
                continue  # the provider retried a call we had already handled
            now = utcnow()
            outcome = apply_feedback(
                session,
                feedback,
                secret_keys=settings.secret_keys,
                soft_bounce_limit=settings.soft_bounce_limit,
                now=now,
                via=source,
            )
            session.add(InboundMessage(key=key, source=source, outcome=outcome, created_at=now))
            applied += outcome not in ("unmatched", "unusable")
    return jsonify(status="ok", applied=applied)


def _message_id(value: object) -> tuple[str, ...]:
    if not isinstance(value, str) or not value.strip():
        return ()
    text = value.strip()
    return (text if text.startswith("<") else f"<{text}>",)


def _addresses(*values: object) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in values if isinstance(v, str) and "@" in v)


def _feedback(
    kind: FeedbackKind,
    recipient: object,
    message_id: object = None,
    status: object = None,
    diagnostic: object = None,
    feedback_type: str | None = None,
) -> Feedback:
    return Feedback(
        kind=kind,
        recipients=_addresses(recipient),
        message_ids=_message_id(message_id),
        addressed_to=(),
        status=status if isinstance(status, str) else None,
        diagnostic=str(diagnostic)[:500] if diagnostic else None,
        feedback_type=feedback_type,
        text=None,
        subject=None,
    )


def _bounce_kind(status: str | None, permanent: bool) -> FeedbackKind:
    """Hard only for a mailbox that does not exist or is disabled (as course.feedback)."""
    from course.feedback import is_hard_status

    if permanent and status and is_hard_status(status):
        return FeedbackKind.HARD_BOUNCE
    if permanent and not status:
        return FeedbackKind.HARD_BOUNCE
    return FeedbackKind.SOFT_BOUNCE


# -- Mailgun ----------------------------------------------------------------------------------


@bp.post("/mailgun")
def mailgun() -> ResponseReturnValue:
    """Mailgun's event webhook (failed, complained)."""
    key = state().settings.mailgun_signing_key
    if key is None:
        abort(404)
    if (request.content_length or 0) > MAX_BODY:
        abort(413)
    body = _json(request.get_data(cache=False))
    signature = body.get("signature") if isinstance(body, dict) else None
    if not isinstance(signature, dict):
        return _refuse()
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not all(isinstance(v, str) for v in (timestamp, token, given)):
        return _refuse()
    assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(given, str)
    expected = hmac.new(
        key.get_secret_value().encode(), (timestamp + token).encode(), sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, given) or not _recent(timestamp):
        return _refuse()
    data = body.get("event-data")
    if not isinstance(data, dict):
        return _apply("mailgun", [])
    event = data.get("event")
    headers = (data.get("message") or {}).get("headers") or {}
    status = data.get("delivery-status") or {}
    enhanced = _enhanced(status.get("enhanced-code") or status.get("description"))
    if event == "failed":
        permanent = data.get("severity") == "permanent"
        feedback = _feedback(
            _bounce_kind(enhanced, permanent),
            data.get("recipient"),
            headers.get("message-id"),
            enhanced,
            status.get("message") or status.get("description"),
        )
    elif event == "complained":
        feedback = _feedback(
            FeedbackKind.COMPLAINT,
            data.get("recipient"),
            headers.get("message-id"),
            feedback_type="abuse",
        )
    else:
        return _apply("mailgun", [])  # delivered, opened, ...: nothing to do
    return _apply("mailgun", [(f"token:{token}", feedback)])


def _enhanced(value: object) -> str | None:
    """An enhanced status code (``5.1.1``) found in ``value``, if any."""
    import re

    if not isinstance(value, str):
        return None
    found = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", value)
    return found.group(1) if found else None


def _recent(timestamp: str) -> bool:
    try:
        return abs(time.time() - float(timestamp)) <= MAX_AGE_SECONDS
    except ValueError:
        return False


# -- SendGrid --------------------------------------------------------------------------------

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


@bp.post("/sendgrid")
def sendgrid() -> ResponseReturnValue:
    """SendGrid's signed Event Webhook (bounce, blocked, dropped, spamreport)."""
    key_text = state().settings.sendgrid_verification_key
    if not key_text:
        abort(404)
    if (request.content_length or 0) > MAX_BODY:
        abort(413)
    raw = request.get_data(cache=False)
    signature = request.headers.get(SENDGRID_SIGNATURE, "")
    timestamp = request.headers.get(SENDGRID_TIMESTAMP, "")
    if not signature or not timestamp or not _recent(timestamp):
        return _refuse()
    try:
        key = serialization.load_der_public_key(base64.b64decode(key_text))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return _refuse()
        key.verify(base64.b64decode(signature), timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return _refuse()
    events = _json(raw)
    if not isinstance(events, list):
        abort(400)
    found: list[tuple[str, Feedback]] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("event")
        status = _enhanced(event.get("status"))
        if kind == "bounce":
            permanent = event.get("type", "bounce") == "bounce"
            fb = _feedback(
                _bounce_kind(status, permanent),
                event.get("email"),
                event.get("smtp-id"),
                status,
                event.get("reason"),
            )
        elif kind == "spamreport":
            fb = _feedback(
                FeedbackKind.COMPLAINT,
                event.get("email"),
                event.get("smtp-id"),
                feedback_type="abuse",
            )
        else:
            continue
        event_id = event.get("sg_event_id") or json.dumps(event, sort_keys=True)
        found.append((f"event:{event_id}", fb))
    return _apply("sendgrid", found)


# -- Postmark --------------------------------------------------------------------------------


@bp.post("/postmark")
def postmark() -> ResponseReturnValue:
    """Postmark's bounce and spam complaint webhooks (basic authentication)."""
    auth = state().settings.postmark_webhook_auth
    if auth is None:
        abort(404)
    given = request.authorization
    expected_user, _, expected_password = auth.get_secret_value().partition(":")
    if (
        given is None
        or given.type != "basic"
        or not hmac.compare_digest((given.username or "").encode(), expected_user.encode())
        or not hmac.compare_digest((given.password or "").encode(), expected_password.encode())
    ):
        return _refuse()
    if (request.content_length or 0) > MAX_BODY:
        abort(413)
    body = _json(request.get_data(cache=False))
    if not isinstance(body, dict):
        abort(400)
    record = body.get("RecordType")
    if record == "Bounce":
        hard = body.get("Type") in ("HardBounce", "BadEmailAddress", "ManuallyDeactivated")
        status = _enhanced(body.get("Details") or body.get("Description"))
        kind = FeedbackKind.HARD_BOUNCE if hard else FeedbackKind.SOFT_BOUNCE
        feedback = _feedback(kind, body.get("Email"), None, status, body.get("Description"))
    elif record == "SpamComplaint":
        feedback = _feedback(FeedbackKind.COMPLAINT, body.get("Email"), feedback_type="abuse")
    else:
        return _apply("postmark", [])
    event_id = str(body.get("ID") or body.get("MessageID") or json.dumps(body, sort_keys=True))
    return _apply("postmark", [(f"{record}:{event_id}", feedback)])
