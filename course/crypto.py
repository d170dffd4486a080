"""Encryption at rest for what readers write: notes and replies.

A reader's private note is the most sensitive thing the course keeps. It is encrypted with
Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) before it reaches the
database, with ``COURSE_DATA_KEYS`` (newest first: the first key encrypts, every key
decrypts, as ``MultiFernet`` does). A database dump, a backup or a read-only database
account therefore shows ciphertext only; the keys live in the environment of the app and
the senders, not in the database.

Rotation: put a new key first, keep the old one after it, run ``course keys rotate``
(which re-encrypts every note and reply with the new key), then drop the old key.

The columns use :class:`EncryptedText`, which encrypts on the way in and decrypts on the
way out with the process's key ring (:func:`use_keys`, set once when the app or a sender is
configured). A value that is not ciphertext is a note written before encryption was
introduced: it is read as it is, and ``course keys rotate`` encrypts it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text, TypeDecorator
from sqlalchemy.engine import Dialect

#: Fernet tokens start with the version byte 0x80, "gAAAAA" in base64.
_TOKEN_PREFIX = "gAAAAA"


class DataKeyError(ValueError):
    """A data key is malformed, or no key can decrypt a stored value."""


class _KeyRing:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fernet: MultiFernet | None = None

    def set(self, keys: Sequence[str]) -> None:
        fernets = []
        for n, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode() if isinstance(key, str) else key))
            except (ValueError, TypeError):
                raise DataKeyError(
                    f"COURSE_DATA_KEYS entry {n} is not a Fernet key (32 url-safe base64 "
                    "bytes); make one with `course keys generate`"
                ) from None
        with self._lock:
            self._fernet = MultiFernet(fernets) if fernets else None

    def get(self) -> MultiFernet:
        if self._fernet is None:
            raise DataKeyError("no data key is configured (COURSE_DATA_KEYS)")
        return self._fernet


_ring = _KeyRing()


def use_keys(keys: Sequence[str]) -> None:
    """Set this process's data keys (newest first)."""
    _ring.set(keys)


def check_keys(keys: Sequence[str]) -> None:
    """Raise :class:`DataKeyError` if any key is malformed."""
    _KeyRing().set(keys)


def generate_key() -> str:
    """A new data key."""
    return Fernet.generate_key().decode("ascii")


def encrypt(text: str) -> str:
    """``text`` as a Fernet token with the newest key."""
    return _ring.get().encrypt(text.encode("utf-8")).decode("ascii")


def decrypt(value: str) -> str:
    """The text of a stored value (a token, or plain text from before encryption)."""
    if not is_encrypted(value):
        return value
    try:
        return _ring.get().decrypt(value.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise DataKeyError(
            "a stored note cannot be decrypted with any key in COURSE_DATA_KEYS (was a key "
            "removed before `course keys rotate`?)"
        ) from None


def rotate(value: str) -> str:
    """``value`` re-encrypted with the newest key (plain text gets encrypted)."""
    if not is_encrypted(value):
        return encrypt(value)
    return _ring.get().rotate(value.encode("ascii")).decode("ascii")


def is_encrypted(value: str) -> bool:
    """Whether a stored value is a Fernet token."""
    return value.startswith(_TOKEN_PREFIX)


class EncryptedText(TypeDecorator[str]):
    """A text column stored encrypted (see the module docstring)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else decrypt(value)


def development_key(instance: Path) -> str:
    """Create once and reuse a data key in the instance folder (development only)."""
    path = instance / "data_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key
