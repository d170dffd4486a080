"""Builds the emails: Jinja templates in pairs (``.html`` and ``.txt``), CSS inlined.

Rendering a template and inlining its CSS is the expensive part of a message, and it is the
same for every reader of a lesson. So each email is *compiled* once: the templates are
rendered with placeholders (``@@slot@@``) where the per-reader parts go (greeting, signed
links), the CSS is inlined, and the result is cached. Per reader, only the placeholders are
filled in (HTML-escaped in the HTML part) and the MIME message is assembled.
"""

from __future__ import annotations

import binascii
import html
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline
import idna
from jinja2 import Environment, StrictUndefined, select_autoescape

from course.config import Settings
from course.content import AfterCourseEmail
from course.courses import PublishedCourse
from course.crisis import (
    CountryResources,
    country_for_timezone,
    load_resources,
    localized,
    resources_for,
    text_lines,
)
from course.dkim import DkimSigner
from course.envelope import bounce_address
from course.i18n import (
    DEFAULT_LANGUAGE,
    gettext_for,
    html_lang,
    language_for,
    setting_text,
    text_direction,
    translations,
)
from course.resources import template_loader
from course.tokens import Signer

_SLOT = re.compile(r"@@([a-z0-9_]+)@@")
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
    """An email with everything but the per-reader parts filled in.

    ``html_parts`` and ``text_parts`` are the bodies split at the placeholders: literal text
    at even positions, slot names at odd ones (what ``re.split`` with a group returns), so
    filling in a reader is one ``join`` instead of a regex pass over the whole body.
    """

    subject: str
    html: str
    text: str
    slots: frozenset[str]
    html_parts: tuple[str, ...] = ()
    text_parts: tuple[str, ...] = ()
    subject_header: str = ""
    # The bodies quoted-printable encoded, line by line: lines without a placeholder are
    # encoded once here (most of a message), the others per reader (see _QpPlan).
    html_qp: _QpPlan = ()
    text_qp: _QpPlan = ()
    #: The language it is written in (the course's): the per-reader parts follow it.
    language: str = DEFAULT_LANGUAGE

    @classmethod
    def build(
        cls,
        subject: str,
        html: str,
        text: str,
        slots: frozenset[str],
        language: str = DEFAULT_LANGUAGE,
    ) -> CompiledEmail:
        """Split the bodies once and encode the subject once."""
        return cls(
            language=language,
            subject=subject,
            html=html,
            text=text,
            slots=slots,
            html_parts=tuple(_SLOT.split(html)),
            text_parts=tuple(_SLOT.split(text)),
            subject_header=_encode_header(subject),
            html_qp=_qp_plan(html),
            text_qp=_qp_plan(text),
        )

    def fill(self, values: dict[str, str]) -> tuple[str, str]:
        """The HTML and text bodies with the placeholders replaced by ``values``."""
        return (
            _join(self.html_parts, values, lambda v: html.escape(v, quote=True)),
            _join(self.text_parts, values, str),
        )

    def encoded(self, values: dict[str, str]) -> tuple[bytes, bytes]:
        """The HTML and text bodies with ``values`` filled in, quoted-printable encoded with
        CRLF line ends: what :meth:`fill` and :func:`_qp` give, without encoding again the
        lines that are the same for every reader."""
        return (
            _qp_fill(self.html_qp, values, lambda v: html.escape(v, quote=True)),
            _qp_fill(self.text_qp, values, str),
        )


#: A body as quoted-printable pieces: encoded bytes, or a line still holding placeholders
#: (split as ``_SLOT.split`` splits it).
_QpPlan = tuple[bytes | tuple[str, ...], ...]


def _qp_plan(body: str) -> _QpPlan:
    """Encode every line without a placeholder now; keep the others for :func:`_qp_fill`.

    Quoted-printable encodes each line on its own (its soft breaks and its trailing
    whitespace depend on that line only), so encoding line by line gives the same bytes as
    encoding the whole body; the tests check it."""
    plan: list[bytes | tuple[str, ...]] = []
    done: list[str] = []
    for line in _lines(body):
        if _SLOT.search(line):
            if done:
                plan.append(_qp("".join(done)))
                done = []
            plan.append(tuple(_SLOT.split(line)))
        else:
            done.append(line)
    if done:
        plan.append(_qp("".join(done)))
    return tuple(plan)


def _lines(body: str) -> list[str]:
    """``body``'s lines with their LF ends (the last may have none). A CR stays as it is:
    :func:`_qp` makes CRLF and CR line ends per line as it would for the whole body (a
    CRLF pair never spans two lines)."""
    lines = body.split("\n")
    ended = [line + "\n" for line in lines[:-1]]
    return ended + [lines[-1]] if lines[-1] else ended


def _qp_fill(plan: _QpPlan, values: dict[str, str], escape: Callable[[str], str]) -> bytes:
    return b"".join(
        piece if isinstance(piece, bytes) else _qp(_join(piece, values, escape)) for piece in plan
    )


def _join(parts: tuple[str, ...], values: dict[str, str], escape: Callable[[str], str]) -> str:
    out = list(parts)
    for i in range(1, len(out), 2):
        value = values.get(out[i])
        out[i] = f"@@{out[i]}@@" if value is None else escape(value)
    return "".join(out)


def _encode_header(value: str) -> str:
    """A header value as it goes on the wire: RFC 2047 for non-ASCII text."""
    if "\r" in value or "\n" in value:
        raise ValueError("header values cannot contain CR or LF")
    return value if value.isascii() else Header(value, "utf-8").encode(maxlinelen=998)


_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def _address_header(name: str, address: str) -> str:
    """``Name <address>`` for a header, quoting and encoding the name as needed."""
    if not name:
        return address
    # Signup refuses encoded words; this defuses any that reached the database before.
    name = name.replace("=?", "= ?")
    if address.isascii():
        return formataddr((name, address), charset="utf-8")
    # An SMTPUTF8 message (non-ASCII local part): headers are UTF-8 as they stand.
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line endings (binascii: C speed, lines under 77).

    Every CRLF and bare CR becomes a line end first: a bare CR is not allowed in a message
    (RFC 5322), and b2a_qp would otherwise pick CRLF or LF for the whole text from the
    first line end it meets, so no line could be encoded on its own (_qp_plan)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Reader:
    """What a message needs to know about its reader."""

    public_id: str
    email: str
    name: str | None
    country: str | None = None  # whose crisis resources the message shows (course.crisis)


#: The reader that previews, test sends and content checks render for.
SAMPLE_READER = Reader("sample-reader", "reader@example.org", "Sam")


def sample_reader(settings: Settings, email: str | None = None) -> Reader:
    """The sample reader, in the practice's own country (its default time zone's), so a
    preview shows the crisis resources most readers will see."""
    return Reader(
        SAMPLE_READER.public_id,
        email or SAMPLE_READER.email,
        None if email else SAMPLE_READER.name,
        country_for_timezone(settings.default_timezone),
    )


def _list_id(settings: Settings, from_domain: str) -> str:
    """The List-Id header's value (RFC 2919): COURSE_LIST_ID, or the practice's name and
    ``course.<From domain>``."""
    if settings.list_id:
        return _encode_header(settings.list_id)
    name = settings.practice_name.replace("\\", "").replace('"', "")
    return _encode_header(f'"{name}" <course.{from_domain}>')


def envelope_address(email: str) -> str:
    """The address to put on the wire: an internationalised domain in its ASCII (IDNA) form.

    A non-ASCII local part stays as it is and needs SMTPUTF8 from the relay.
    """
    local, _, domain = email.rpartition("@")
    return f"{local}@{_ascii_domain(domain)}"


@lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    # Cached: readers share a few domains, and IDNA encoding is slow next to the rest.
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def make_jinja_env(settings: Settings, language: str = DEFAULT_LANGUAGE) -> Environment:
    """The Jinja environment for email templates in ``language`` (autoescaped HTML, strict
    variables, ``_()`` from that language's catalog: Babel's, not Flask's, so the sender
    needs no app)."""
    env = Environment(
        loader=template_loader(settings),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


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
        # One template environment per language (each with its own catalog), so an English
        # and a German email never share a translation.
        self.env = make_jinja_env(settings)
        self._envs: dict[str, Environment] = {DEFAULT_LANGUAGE: self.env}
        # Compiled emails, by course version and everything else that changes the text.
        self._cache: dict[tuple[object, ...], CompiledEmail] = {}
        self.crisis = load_resources(settings.crisis_resources_file)
        self.envelope_from = bounce_address(settings)
        display, address = parseaddr(settings.mail_from)
        self._from_header = (
            formataddr((display, address), charset="utf-8") if display else address
        ) or "course@localhost"
        from_domain = (address or "course@localhost").rpartition("@")[2].lower()
        # Headers that are the same in every message, encoded once.
        extra = [f"List-Id: {_list_id(settings, from_domain)}"]
        if settings.reply_to:
            name, reply = parseaddr(settings.reply_to)
            extra.append(f"Reply-To: {_address_header(name, reply)}")
        self._extra_headers = "".join(f"{line}\r\n" for line in extra)
        self._dkim_domain = settings.dkim_domain or from_domain
        self._dkim: DkimSigner | None = None

    @property
    def dkim(self) -> DkimSigner | None:
        """The DKIM signer, loaded at the first message (a process that only reads the
        database never needs the key; one that sends checks it at start, see
        Settings.problems)."""
        if self._dkim is None and self.settings.dkim_key_file:
            self._dkim = DkimSigner.from_file(
                self.settings.dkim_key_file, self.settings.dkim_selector, self._dkim_domain
            )
        return self._dkim

    def env_for(self, language: str) -> Environment:
        """The email templates' environment in ``language``."""
        language = language_for(language)
        env = self._envs.get(language)
        if env is None:
            env = self._envs[language] = make_jinja_env(self.settings, language)
        return env

    def crisis_for(
        self, country: str | None, language: str = DEFAULT_LANGUAGE
    ) -> CountryResources:
        """The crisis resources a reader in ``country`` sees (the practice's choice of
        countries applied; elsewhere the worldwide directory), in ``language``."""
        shown = frozenset(self.settings.crisis_countries) or None
        found = resources_for(country, self.crisis, shown)
        language = language_for(language)
        if language == DEFAULT_LANGUAGE:
            return found
        return localized(found, gettext_for(language))

    def _compile(
        self,
        template: str,
        subject: str,
        crisis: CountryResources,
        language: str,
        **context: object,
    ) -> CompiledEmail:
        slots = _Slots()
        _ = gettext_for(language)
        ctx = {
            "r": slots,
            "lang": html_lang(language),
            "dir": text_direction(language),
            "practice_name": self.settings.practice_name,
            "crisis_text": setting_text(self.settings, "crisis_text", language),
            "crisis": crisis,
            "crisis_lines": text_lines(crisis, _=_),
            "privacy_url": self.settings.privacy_url,
            "imprint_url": self.settings.imprint_url,
            "postal_address": self.settings.postal_address,
            **context,
        }
        env = self.env_for(language)
        html_body = env.get_template(f"email/{template}.html").render(ctx)
        text_body = env.get_template(f"email/{template}.txt").render(ctx)
        return CompiledEmail.build(
            subject, _inliner.inline(html_body), text_body, frozenset(slots.used), language
        )

    def compiled(
        self,
        kind: str,
        number: int,
        course: PublishedCourse,
        country: str | None = None,
        *,
        day: int | None = None,
        total: int | None = None,
        known: bool = False,
        others: tuple[PublishedCourse, ...] = (),
    ) -> CompiledEmail:
        """The compiled email for readers in ``country``, cached per course version.

        ``day``/``total``: the reader's own count for a lesson ("Day 3 of 5"; by default
        the lesson's place in the course). ``known``: the confirmation goes to an address
        that confirmed for another course before. ``others``: the practice's other courses,
        offered after the last lesson.
        """
        content = course.content
        # The course's language: its emails are written in it (lessons and catalog alike).
        language = language_for(course.language)
        crisis = self.crisis_for(country, language)
        position = content.position(number) or 1
        day = day if day is not None else position
        total = total if total is not None else content.total
        key = (
            course.id,
            course.version_id,
            course.title,
            kind,
            number,
            crisis.country,
            day,
            total,
            known,
            tuple((c.id, c.title, c.description) for c in others),
            language,
        )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        common = {
            "course_title": course.title,
            "total": total,
            "day": day,
            "others": [
                {"id": c.id, "title": c.title, "description": c.description} for c in others
            ],
        }
        _ = gettext_for(language)
        if kind == "confirm":
            subject = (
                _("Please confirm: %(course)s") % {"course": course.title}
                if known
                else _("Please confirm your email for %(practice)s")
                % {"practice": self.settings.practice_name}
            )
            cached = self._compile("confirm", subject, crisis, language, known=known, **common)
        elif kind == "lesson":
            lesson = content.get(number)
            if lesson is None:
                reason = content.broken.get(number, "it is not in the published version")
                raise LookupError(f"lesson {number} of '{course.slug}' cannot be used: {reason}")
            lesson = lesson.for_reader(day, total)
            cached = self._compile(
                "lesson", lesson.subject, crisis, language, lesson=lesson, **common
            )
        elif kind in ("completion", "followup"):
            after: AfterCourseEmail | None = getattr(content, kind)
            if after is None:
                raise LookupError(f"'{course.slug}' has no {kind} email")
            cached = self._compile(kind, after.subject, crisis, language, message=after, **common)
        else:
            raise LookupError(f"no email of the kind {kind!r}")
        if course.version_id is None:
            return cached  # a draft (a preview, a test send): it changes with every edit
        if len(self._cache) > 4096:
            self._cache.clear()  # old versions and counts: rebuilt on demand
        self._cache[key] = cached
        return cached

    # -- per reader -----------------------------------------------------------------------

    def url(self, purpose: str, *payload: str | int, path: str | None = None) -> str:
        """An absolute, signed link for ``purpose``."""
        token = self.signer.dumps(purpose, *payload)
        return f"{self.settings.base_url}/{path or purpose}/{token}"

    def slot_values(
        self,
        slots: frozenset[str],
        reader: Reader,
        kind: str,
        number: int,
        language: str = DEFAULT_LANGUAGE,
    ) -> dict[str, str]:
        """Compute the per-reader values a compiled email asks for (the greeting in
        ``language``, the compiled email's)."""
        pid = reader.public_id
        _ = gettext_for(language)
        makers: dict[str, Callable[[], str]] = {
            "greeting": lambda: (
                _("Hi %(name)s,") % {"name": reader.name} if reader.name else _("Hello,")
            ),
            "email": lambda: reader.email,
            # The confirmation's number: a reader coming back starts again only from the
            # latest one (course.subscriptions.confirm).
            "confirm_url": lambda: self.url("confirm", pid, number),
            "unsubscribe_url": lambda: self.url("unsubscribe", pid),
            "book_url": lambda: self.url("book", pid, number),
            "done_url": lambda: self.url("done", pid, number),
            "view_url": lambda: self.url("view", pid, number),
            "progress_url": lambda: self.url("progress", pid, path="me"),
            "pause_url": lambda: self.url("pause", pid),
            "checkin_lighter_url": lambda: self.url("checkin", pid, number, "lighter"),
            "checkin_same_url": lambda: self.url("checkin", pid, number, "same"),
            "checkin_stirred_url": lambda: self.url("checkin", pid, number, "stirred"),
            # The follow-up after the course: its answers are a check-in on "lesson 0".
            "followup_lighter_url": lambda: self.url("checkin", pid, 0, "lighter"),
            "followup_same_url": lambda: self.url("checkin", pid, 0, "same"),
            "followup_stirred_url": lambda: self.url("checkin", pid, 0, "stirred"),
            "book_after_url": lambda: self.url("book", pid, 0),
        }
        values = {slot: makers[slot]() for slot in slots if slot in makers}
        for slot in slots:
            # Another course offered after this one: "join_url_<course id>".
            if slot.startswith("join_url_") and slot[9:].isdigit():
                values[slot] = self.url("join", pid, int(slot[9:]))
        return values

    def message_id(
        self,
        kind: str,
        number: int,
        public_id: str,
        generation: int = 0,
        *,
        run: int = 1,
        test: bool = False,
    ) -> str:
        """The same Message-ID for the same reader and email, so a resend can be deduplicated.

        An operator's deliberate re-send (``generation`` > 0) gets its own id, a lesson of a
        later run of the course too (a mail app would hide it as a copy of the first run's),
        and so does every test send: a mail app would otherwise hide a second test after an
        edit.
        """
        again = (f"-run{run}" if run > 1 else "") + (f"-r{generation}" if generation else "")
        if test:
            again = f"-test-{secrets.token_hex(6)}"
        return f"<{kind}-{number}{again}.{public_id}@{self.settings.mail_domain}>"

    def build(
        self,
        kind: str,
        number: int,
        reader: Reader,
        course: PublishedCourse,
        now: datetime,
        generation: int = 0,
        *,
        day: int | None = None,
        total: int | None = None,
        known: bool = False,
        others: tuple[PublishedCourse, ...] = (),
        run: int = 1,
        test: bool = False,
    ) -> bytes:
        """The finished message as CRLF bytes, ready for SMTP (DKIM-signed when configured).

        ``test``: a test send, with "[Test]" in the subject and a Message-ID of its own.
        The other arguments are :meth:`compiled`'s.

        Assembled from pre-encoded pieces rather than with ``email.message``: that package
        takes milliseconds per message, several times an SMTP round trip. The tests parse
        every message with the ``email`` package to check the result.
        """
        compiled = self.compiled(
            kind,
            number,
            course,
            reader.country,
            day=day,
            total=total,
            known=known,
            others=others,
        )
        values = self.slot_values(
            compiled.slots | {"unsubscribe_url"}, reader, kind, number, compiled.language
        )
        html_qp, text_qp = compiled.encoded(values)
        to = envelope_address(reader.email)
        name = reader.name or ""
        if any(ch in name for ch in "\r\n\0"):
            raise ValueError("a reader's name cannot contain CR, LF or NUL")
        # formataddr quotes specials and RFC 2047-encodes a non-ASCII name. A non-ASCII
        # local part stays UTF-8 (the relay must offer SMTPUTF8).
        to_header = _address_header(name, to)
        boundary = f"=_course_{number}_{generation}"  # "=_" cannot occur in QP-encoded text
        subject = _encode_header(f"[Test] {compiled.subject}") if test else compiled.subject_header
        message_id = self.message_id(kind, number, reader.public_id, generation, run=run, test=test)
        head = (
            f"From: {self._from_header}\r\n"
            f"To: {to_header}\r\n"
            f"Subject: {subject}\r\n"
            f"Date: {format_datetime(now)}\r\n"
            f"Message-ID: {message_id}\r\n"
            f"{self._extra_headers}"
            f"List-Unsubscribe: <{values['unsubscribe_url']}>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            "Auto-Submitted: auto-generated\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
            "\r\n"
        )
        part = (
            '--{b}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        message = b"".join(
            (
                head.encode("utf-8"),
                part.format(b=boundary, kind="plain").encode(),
                text_qp,
                b"\r\n",
                part.format(b=boundary, kind="html").encode(),
                html_qp,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        return message if self.dkim is None else self.dkim.sign(message)
