"""Builds the emails: Jinja templates in pairs (``.html`` and ``.txt``), CSS inlined.

Rendering a template and inlining its CSS is the expensive part of a message, and it is the
same for every reader of a lesson. So each email is *compiled* once: the templates are
rendered with placeholders (``@@slot@@``) where the per-reader parts go (greeting, signed
links), the CSS is inlined, and the result is cached. Per reader, only the placeholders are
filled in (HTML-escaped in the HTML part) and the MIME message is assembled.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline
import idna
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from course.config import Settings
from course.lessons import Lesson, LessonSet
from course.tokens import Signer

_SLOT = re.compile(r"@@([a-z_]+)@@")
# Headers may be up to 998 characters (RFC 5322). With the default 78 the email package
# would RFC 2047-encode a long List-Unsubscribe URL, which mail apps then cannot read.
_POLICY = SMTP.clone(max_line_length=998)
_POLICY_UTF8 = _POLICY.clone(utf8=True)  # for addresses with a non-ASCII local part
_inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


class _Slots:
    """Stands in for the per-reader values while a template is compiled; records which
    ones the template used, so only those are computed per message."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        self.used.add(name)
        return f"@@{name}@@"


@dataclass(frozen=True)
class CompiledEmail:
    """An email with everything but the per-reader parts filled in."""

    subject: str
    html: str
    text: str
    slots: frozenset[str]

    def fill(self, values: dict[str, str]) -> tuple[str, str]:
        """The HTML and text bodies with the placeholders replaced by ``values``."""

        def for_html(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            return match.group(0) if value is None else html.escape(value, quote=True)

        def for_text(match: re.Match[str]) -> str:
            return values.get(match.group(1), match.group(0))

        return _SLOT.sub(for_html, self.html), _SLOT.sub(for_text, self.text)


@dataclass(frozen=True)
class Reader:
    """What a message needs to know about its reader."""

    public_id: str
    email: str
    name: str | None


def envelope_address(email: str) -> str:
    """The address to put on the wire: an internationalised domain in its ASCII (IDNA) form.

    A non-ASCII local part stays as it is and needs SMTPUTF8 from the relay.
    """
    local, _, domain = email.rpartition("@")
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        pass
    return f"{local}@{domain}"


def make_jinja_env(settings: Settings) -> Environment:
    """The Jinja environment for email templates (autoescaped HTML, strict variables)."""
    return Environment(
        loader=FileSystemLoader(settings.templates_dir),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def add_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query string (existing keys are replaced)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class Renderer:
    """Compiles emails once per lesson and builds finished messages per reader."""

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer
        self.env = make_jinja_env(settings)
        self._cache: dict[tuple[int, str, int], CompiledEmail] = {}
        self.envelope_from = parseaddr(settings.mail_from)[1] or "course@localhost"

    def _compile(self, template: str, lessons: LessonSet, **context: object) -> CompiledEmail:
        slots = _Slots()
        ctx = {
            "r": slots,
            "practice_name": self.settings.practice_name,
            "crisis_text": self.settings.crisis_text,
            "total": lessons.total,
            **context,
        }
        html_body = self.env.get_template(f"email/{template}.html").render(ctx)
        text_body = self.env.get_template(f"email/{template}.txt").render(ctx)
        lesson = context.get("lesson")
        subject = (
            lesson.subject
            if isinstance(lesson, Lesson)
            else f"Please confirm your email for {self.settings.practice_name}"
        )
        return CompiledEmail(
            subject=subject,
            html=_inliner.inline(html_body),
            text=text_body,
            slots=frozenset(slots.used),
        )

    def compiled(self, kind: str, number: int, lessons: LessonSet) -> CompiledEmail:
        """The compiled confirmation or lesson ``number`` (cached per lesson set)."""
        key = (id(lessons), kind, number if kind == "lesson" else 0)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) > 256:  # lesson sets reloaded many times: start afresh
                self._cache.clear()
            if kind == "confirm":
                cached = self._compile("confirm", lessons)
            else:
                lesson = lessons.get(number)
                if lesson is None:
                    raise LookupError(f"lesson {number} is missing or broken")
                cached = self._compile("lesson", lessons, lesson=lesson)
            self._cache[key] = cached
        return cached

    # -- per reader -----------------------------------------------------------------------

    def url(self, purpose: str, *payload: str | int, path: str | None = None) -> str:
        """An absolute, signed link for ``purpose``."""
        token = self.signer.dumps(purpose, *payload)
        return f"{self.settings.base_url}/{path or purpose}/{token}"

    def slot_values(
        self, slots: frozenset[str], reader: Reader, kind: str, number: int
    ) -> dict[str, str]:
        """Compute the per-reader values a compiled email asks for."""
        pid = reader.public_id
        makers: dict[str, Callable[[], str]] = {
            "greeting": lambda: f"Hi {reader.name}," if reader.name else "Hello,",
            "email": lambda: reader.email,
            "confirm_url": lambda: self.url("confirm", pid),
            "unsubscribe_url": lambda: self.url("unsubscribe", pid),
            "book_url": lambda: self.url("book", pid, number),
            "done_url": lambda: self.url("done", pid, number),
            "view_url": lambda: self.url("view", pid, number),
            "progress_url": lambda: self.url("progress", pid, path="me"),
            "pause_url": lambda: self.url("pause", pid),
            "checkin_lighter_url": lambda: self.url("checkin", pid, number, "lighter"),
            "checkin_same_url": lambda: self.url("checkin", pid, number, "same"),
            "checkin_stirred_url": lambda: self.url("checkin", pid, number, "stirred"),
        }
        return {slot: makers[slot]() for slot in slots if slot in makers}

    def message_id(self, kind: str, number: int, public_id: str, generation: int = 0) -> str:
        """The same Message-ID for the same reader and email, so a resend can be deduplicated.

        An operator's deliberate re-send (``generation`` > 0) gets its own id.
        """
        again = f"-r{generation}" if generation else ""
        return f"<{kind}-{number}{again}.{public_id}@{self.settings.mail_domain}>"

    def build(
        self,
        kind: str,
        number: int,
        reader: Reader,
        lessons: LessonSet,
        now: datetime,
        generation: int = 0,
    ) -> bytes:
        """The finished message as CRLF bytes, ready for SMTP."""
        compiled = self.compiled(kind, number, lessons)
        values = self.slot_values(compiled.slots | {"unsubscribe_url"}, reader, kind, number)
        html_body, text_body = compiled.fill(values)
        to = envelope_address(reader.email)
        msg = EmailMessage(policy=_POLICY if to.isascii() else _POLICY_UTF8)
        msg["From"] = self.settings.mail_from
        # Address() refuses CR/LF and other header-breaking characters in the name.
        local, _, domain = to.rpartition("@")
        msg["To"] = Address(display_name=reader.name or "", username=local, domain=domain)
        msg["Subject"] = compiled.subject
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = self.message_id(kind, number, reader.public_id, generation)
        msg["List-Unsubscribe"] = f"<{values['unsubscribe_url']}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Auto-Submitted"] = "auto-generated"
        # Quoted-printable keeps every line under 998 characters whatever the template.
        msg.set_content(text_body, subtype="plain", charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html_body, subtype="html", charset="utf-8", cte="quoted-printable")
        return msg.as_bytes()
