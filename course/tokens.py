"""Signed tokens for the links in emails.

Each token carries the subscriber's ``public_id`` (never the row id or the address), plus the
lesson day or answer where the link needs one. Each purpose has its own salt, so a token
made for one purpose is refused for any other. Keys rotate: the newest key signs, and the
older ones in ``COURSE_SECRET_KEY_FALLBACKS`` still verify.

Tokens do not expire (an unsubscribe link must work forever), except the confirmation link,
which is only good while a pending signup is kept.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Sequence
from typing import Any

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer

PURPOSES = (
    "confirm",
    "unsubscribe",
    "done",
    "checkin",
    "view",
    "progress",
    "pause",
    "book",
    "join",  # another course, offered after the last lesson (course.web.links.join)
    "bookref",  # names the reader in a booking system's webhook; opens no page (course.bookings)
)

#: Payloads (compact JSON) shorter than this are signed by :meth:`Signer.dumps`'s own fast
#: path. itsdangerous would try zlib first and use it only if it saved two bytes or more,
#: which for a payload this short needs long repeats; a public id (22 random characters)
#: and a number or an answer have none, so the token is byte for byte itsdangerous's (the
#: tests compare them). Longer payloads go through itsdangerous itself.
FAST_PAYLOAD_BYTES = 48

#: How long a confirmation link stays valid; pending signups are kept as long (issue #6).
CONFIRM_MAX_AGE_SECONDS = 7 * 24 * 3600


class InvalidToken(ValueError):
    """The token is malformed, tampered with, made for another purpose, or expired."""


class Signer:
    """Makes and checks tokens for every link purpose with one set of keys."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        # No keys at all is allowed for commands that never sign (``course stats``); signing
        # or checking a link then fails loudly. An empty key is never allowed.
        if not all(secret_keys):
            raise ValueError("secret keys cannot be empty")
        keys = list(secret_keys)
        # Built once: a lesson email carries nine signed links, so this is on the hot path.
        self._serializers: dict[str, URLSafeSerializer | URLSafeTimedSerializer] = (
            {
                purpose: (URLSafeTimedSerializer if purpose == "confirm" else URLSafeSerializer)(
                    keys, salt=f"course.{purpose}"
                )
                for purpose in PURPOSES
            }
            if keys
            else {}
        )

        # Per purpose, the HMAC of the signing key (itsdangerous's derived key, the newest
        # secret), keyed once: each token copies it instead of deriving the key again.
        self._macs: dict[str, hmac.HMAC] = {}
        for purpose, serializer in self._serializers.items():
            if purpose == "confirm":
                continue  # timed: itsdangerous adds the time stamp
            signer = serializer.make_signer()
            self._macs[purpose] = hmac.new(signer.derive_key(), digestmod=signer.digest_method)

    def _serializer(self, purpose: str) -> URLSafeSerializer | URLSafeTimedSerializer:
        try:
            return self._serializers[purpose]
        except KeyError:
            if not self._serializers:
                raise RuntimeError("signing links needs COURSE_SECRET_KEY") from None
            raise ValueError(f"unknown token purpose {purpose!r}") from None

    def dumps(self, purpose: str, *payload: str | int) -> str:
        """A token for ``purpose`` carrying ``payload`` (first item: the public id)."""
        mac = self._macs.get(purpose)
        if mac is not None:
            data = json.dumps(list(payload), separators=(",", ":")).encode()
            if len(data) < FAST_PAYLOAD_BYTES:
                # A lesson email signs nine links: this is on the sender's hot path.
                value = base64.urlsafe_b64encode(data).rstrip(b"=")
                signing = mac.copy()
                signing.update(value)
                signature = base64.urlsafe_b64encode(signing.digest()).rstrip(b"=")
                return (value + b"." + signature).decode("ascii")
        return str(self._serializer(purpose).dumps(list(payload)))

    def loads(self, purpose: str, token: str, max_age: int | None = None) -> list[Any]:
        """Check ``token`` and return its payload, or raise :class:`InvalidToken`."""
        if not isinstance(token, str) or len(token) > 512:
            raise InvalidToken("malformed token")
        serializer = self._serializer(purpose)
        try:
            if isinstance(serializer, URLSafeTimedSerializer):
                payload = serializer.loads(token, max_age=max_age or CONFIRM_MAX_AGE_SECONDS)
            else:
                payload = serializer.loads(token)
        except (BadData, UnicodeError, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None
        if not isinstance(payload, list) or not payload or not isinstance(payload[0], str):
            raise InvalidToken("unexpected payload")
        return payload
