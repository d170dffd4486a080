"""Small helpers shared by tests: reading links out of sent messages."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path


def parse(data: bytes) -> EmailMessage:
    """A sent message, parsed."""
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def text_part(data: bytes) -> str:
    """The plain-text part of a sent message."""
    body = parse(data).get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def html_part(data: bytes) -> str:
    """The HTML part of a sent message."""
    body = parse(data).get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def link(data: bytes, path: str) -> str:
    """The first absolute link to ``/<path>/<token>`` in the text part."""
    match = re.search(rf"https?://[^\s/]+/{path}/[A-Za-z0-9._-]+", text_part(data))
    assert match, f"no /{path}/ link in message"
    return match.group(0)


def local_path(url: str) -> str:
    """The path of an absolute URL, for the Flask test client."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


#: The repository's root (docs, the shipped lesson sources).
REPO = Path(__file__).resolve().parent.parent
