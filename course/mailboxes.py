"""Which addresses reach the same mailbox, and a keyed fingerprint of a mailbox.

``ana+course@gmail.com``, ``a.n.a@googlemail.com`` and ``ANA@gmail.com`` are three addresses
but one inbox. Limits on how many confirmation emails one person can be sent must count
them together, or anyone could flood an inbox through its variants. So caps work on the
*mailbox*: the address lower-cased, without a ``+tag`` (most providers and mail servers
deliver ``name+anything`` to ``name``), with the provider-specific rules of the big
providers (Gmail ignores dots in the local part and treats googlemail.com as gmail.com).

This is only for counting and for the opt-out list. Enrolments keep the address exactly
as the reader typed it (after email-validator's normalisation), because that is where
they asked to be written to.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from hashlib import sha256

#: Domains that are one provider's mailboxes, mapped to the canonical one.
_ALIASES = {"googlemail.com": "gmail.com"}
#: Providers whose local parts ignore dots.
_DOTLESS = {"gmail.com"}
#: Providers where "-" starts a tag instead of "+" (Yahoo's disposable addresses use a
#: different base name, so they are separate mailboxes and are not folded here).
_TAG_SEPARATORS = ("+",)


def mailbox(address: str) -> str:
    """The mailbox ``address`` delivers to, for counting: ``ana@gmail.com``."""
    local, _, domain = address.strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    domain = _ALIASES.get(domain, domain)
    local = local.lower()
    for separator in _TAG_SEPARATORS:
        if separator in local[1:]:
            local = local[: local.index(separator, 1)]
    if domain in _DOTLESS:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def domain_of(address: str) -> str:
    """The mailbox's domain (after aliases): what a per-domain cap counts."""
    return mailbox(address).rpartition("@")[2]


def fingerprints(secret_keys: Sequence[str], address: str) -> list[str]:
    """Keyed hashes of the mailbox, one per key, the current key's first.

    The opt-out list stores only the current one; checking against every key keeps old
    entries working through a key rotation (while the old key is a fallback).
    """
    box = mailbox(address).encode()
    return [
        hmac.new(key.encode(), b"course.mailbox:" + box, sha256).hexdigest()
        for key in reversed(secret_keys)
    ]
