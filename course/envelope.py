"""Who a message is from on the wire: the envelope sender (Return-Path) and VERP.

Bounces go to the envelope sender, not to the From address. ``COURSE_BOUNCE_ADDRESS``
names a mailbox for them (else the From address is used). With ``COURSE_VERP`` each
delivery gets its own envelope sender, ``bounces+<tag>@domain`` (Variable Envelope Return
Path): a bounce then says which delivery it is about by the address it was sent to, with
no parsing of its text. The tag is the delivery's row id and a keyed hash of it, so nobody
can make up a tag that marks another reader as bounced.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from email.utils import parseaddr
from hashlib import sha256

from course.config import Settings

_TAG = re.compile(r"^d([0-9a-z]{1,12})\.([0-9a-f]{10})$")


def bounce_address(settings: Settings) -> str:
    """The envelope sender for bounces: COURSE_BOUNCE_ADDRESS, else the From address."""
    return parseaddr(settings.bounce_address or settings.mail_from)[1] or "course@localhost"


def _tag_hash(secret_keys: Sequence[str], delivery_id: int, key: str) -> str:
    message = f"course.verp:{delivery_id}".encode()
    return hmac.new(key.encode(), message, sha256).hexdigest()[:10]


def verp_tag(secret_keys: Sequence[str], delivery_id: int) -> str:
    """The tag that names one delivery in its envelope sender."""
    return f"d{_base36(delivery_id)}.{_tag_hash(secret_keys, delivery_id, secret_keys[-1])}"


def envelope_sender(settings: Settings, delivery_id: int | None) -> str:
    """The envelope sender of one message: with VERP, the bounce address tagged with the
    delivery; otherwise the bounce address itself."""
    address = bounce_address(settings)
    if not settings.verp or delivery_id is None or not settings.secret_keys:
        return address
    local, _, domain = address.rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}+{verp_tag(settings.secret_keys, delivery_id)}@{domain}"


def delivery_from_verp(secret_keys: Sequence[str], address: str) -> int | None:
    """The delivery a VERP address names, or None (not a VERP address, or a forged tag)."""
    local = address.strip().strip("<>").rpartition("@")[0]
    if "+" not in local:
        return None
    match = _TAG.match(local.split("+", 1)[1].lower())
    if match is None:
        return None
    delivery_id = int(match.group(1), 36)
    for key in secret_keys:  # a tag made before a key rotation still names its delivery
        if hmac.compare_digest(_tag_hash(secret_keys, delivery_id, key), match.group(2)):
            return delivery_id
    return None


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out
