"""Small helpers shared by tests: reading links out of sent messages, and forms out of pages."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


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


@dataclass
class Form:
    """A form as a browser would send it: where, how, and its fields with their values."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value) of submits


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind == "submit":
                self.forms[-1].buttons.append((a["name"], a.get("value", "")))
            elif kind not in ("checkbox", "radio") or "checked" in a:
                self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))
        elif tag == "textarea" and a.get("name"):
            self._textarea = a["name"]
            self.forms[-1].fields[a["name"]] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea and self.forms:
            self.forms[-1].fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None


def forms(page: str) -> list[Form]:
    """Every form on an HTML page, with the values a browser would send."""
    parser = _FormParser()
    parser.feed(page)
    return parser.forms


def confirm_like_a_person(client: Any, url: str) -> Any:
    """Open a confirmation link and press the page's button, as a person does (a GET alone
    confirms nothing). Returns the answer to the button."""
    page = client.get(local_path(url))
    assert page.status_code == 200, page.status_code
    form = forms(page.get_data(as_text=True))[0]
    assert form.method == "post"
    return client.post(form.action or local_path(url), data=form.fields)
