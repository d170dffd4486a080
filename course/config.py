"""Settings: every ``COURSE_*`` variable, declared, typed, validated and documented here.

This module is the one place where configuration is read. :class:`Settings` is a
pydantic-settings model: each field is one ``COURSE_<NAME>`` environment variable, with its
type, its limits, its default and the sentence that documents it. The README's table is
generated from these fields (``course config --markdown``) and a test fails when the two
disagree. Flask's config is derived from a ``Settings`` in ``course.app``; the sending
engine, the scheduler and the CLI use a ``Settings`` directly, without Flask.

Loading is :func:`load_settings`. It warns about ``COURSE_*`` variables that are not
settings (a typo names the closest real one), and in development it fills in what a laptop
needs: a SQLite file, the mail outbox folder and a secret key in the instance folder, and a
base URL that follows ``HOST`` and ``PORT``.

What a process *needs* is checked separately (:meth:`Settings.require`): ``course db
upgrade`` needs only a database, ``course scheduler`` needs a database, a mail transport, a
secret key and the public addresses. Outside development nothing essential has a default,
so a missing setting stops the start with a message that names it.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import secrets
import zoneinfo
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import idna
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger("course.config")

PREFIX = "COURSE_"
#: Variables with these prefixes belong to the test suite and the benchmarks, not the app.
RESERVED_PREFIXES = ("COURSE_TEST_", "COURSE_BENCH_")

#: The shortest gap between two lessons in calendar mode. A lesson sent late (after an
#: outage, or a resume) pushes the next one to the following send hour instead of letting
#: two arrive a few hours apart.
MIN_CALENDAR_GAP_HOURS = 20


class ConfigError(RuntimeError):
    """A setting is missing or has a value the app cannot run with."""


class Need(StrEnum):
    """What a command or process needs from the configuration."""

    DATABASE = "database"
    MAIL = "mail"  # a real mail transport (the outbox only when chosen explicitly)
    SECRET = "secret"  # a strong key to sign links and cookies
    PUBLIC = "public"  # the addresses readers see: base URL, From, booking page


#: Everything a process that serves readers or sends mail needs.
ALL_NEEDS = (Need.DATABASE, Need.MAIL, Need.SECRET, Need.PUBLIC)


def _doc(default: str) -> dict[str, Any]:
    """How a default is shown in the README's table, when the value itself says too little."""
    return {"doc_default": default}


def _split_list(value: Any) -> Any:
    """A list setting from the environment: a JSON list, or comma-separated text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("is not a valid JSON list") from None
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The whole configuration of the app, the senders and the operator commands."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,  # COURSE_X= (empty) means "not set"
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    env: str = Field(
        "production",
        description="`production` or `development`. Development fills in a laptop's defaults "
        "(SQLite, the mail outbox, a key in the instance folder) and has the `/dev/outbox` "
        "pages; `make run` sets it. In production nothing essential has a default and "
        "`/dev/*` does not exist.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the database, e.g. "
        "`postgresql+psycopg://user:pass@host/db`. Required outside development.",
        json_schema_extra=_doc("development: `sqlite:///instance/course.db`"),
    )
    mail_url: str = Field(
        "",
        description="How mail leaves: `smtp://user:pass@host:25` plain SMTP, "
        "`smtp+starttls://…:587` STARTTLS, `smtps://…:465` implicit TLS. Options: "
        "`?timeout=30` (seconds, for each command), `?data_timeout=600` (for the relay's "
        "answer at the end of a message), `?verify=false` (a test relay only), "
        "`?pipelining=off` (Python's smtplib instead of our pipelining client). "
        "`outbox:/folder` writes "
        "`.eml` files instead; outside development only when set explicitly. Required "
        "outside development.",
        json_schema_extra=_doc("development: `outbox:instance/outbox`"),
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Signs every link and the admin's cookie. Required outside development, "
        "and strong: at least 32 random characters, not a placeholder.",
        json_schema_extra=_doc("development: kept in `instance/secret_key`"),
    )
    secret_key_fallbacks: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="Older keys (comma-separated or a JSON list) that still verify links "
        "and cookies during a key rotation; as strong as the main key.",
        json_schema_extra=_doc("none"),
    )
    base_url: str = Field(
        "",
        description="The app's public address; every link in an email starts with it. "
        "Required outside development.",
        json_schema_extra=_doc("development: `http://$HOST:$PORT`"),
    )
    mail_from: str = Field(
        "",
        description="The `From` of every email, e.g. `Your Practice "
        "<course@yourpractice.example>`; its address is also the envelope sender. Required "
        "outside development.",
        json_schema_extra=_doc("development: `Course <course@localhost>`"),
    )
    booking_url: str = Field(
        "",
        description='Where "Book a session" leads. Required outside development.',
        json_schema_extra=_doc("development: `https://example.org/book`"),
    )
    # -- bookings from the booking system (course.bookings, docs/operators.md) -------------
    calcom_webhook_secret: SecretStr | None = Field(
        None,
        description="The secret of a Cal.com webhook: enables `POST /webhooks/bookings/calcom`.",
        json_schema_extra=_doc("none: the webhook is off"),
    )
    calendly_signing_key: SecretStr | None = Field(
        None,
        description="The signing key of a Calendly webhook subscription: enables `POST "
        "/webhooks/bookings/calendly`.",
        json_schema_extra=_doc("none: the webhook is off"),
    )
    booking_webhook_secret: SecretStr | None = Field(
        None,
        description="The secret that signs calls from any other booking system (see "
        "docs/operators.md): enables `POST /webhooks/bookings/generic`.",
        json_schema_extra=_doc("none: the webhook is off"),
    )
    booking_attribution_days: int = Field(
        30,
        ge=1,
        le=365,
        description='A booking counts for the last lesson whose "Book a session" the reader '
        "clicked within this many days before it; later, or without a click, it is recorded "
        "without a lesson.",
    )
    booking_prefill: bool = Field(
        False,
        description='"Book a session" passes the reader\'s name and address to the booking '
        "page, so its form is filled in. Shares personal data with the booking system.",
    )
    practice_name: str = Field(
        "Our practice", description="The practice's name in emails and pages.", max_length=100
    )
    send_hour: int = Field(8, ge=0, le=23, description="Local hour (0–23) of daily lessons.")
    default_timezone: str = Field(
        "UTC", description="Time zone (IANA name) of readers who did not give one."
    )
    tick_seconds: float = Field(
        5, ge=0.1, le=3600, description="How often a sender looks for due mail, in seconds."
    )
    lesson_interval: float | None = Field(
        None,
        ge=1,
        description="Seconds between lessons instead of calendar days (`30` runs the course "
        "in minutes, for demos and tests).",
        json_schema_extra=_doc("unset: calendar days"),
    )
    lessons_dir: Path | None = Field(
        None,
        description="A course folder (lesson files, see docs/courses.md) that `course db "
        "upgrade` imports as the first course when the database has none yet. Afterwards "
        "courses live in the database: edit them in the admin, or publish a folder with "
        "`course courses import`.",
        json_schema_extra=_doc("the shipped course"),
    )
    templates_dir: Path | None = Field(
        None,
        description="A folder whose templates take precedence over the shipped ones (same "
        "names, e.g. `email/base.html`), for the practice's branding.",
        json_schema_extra=_doc("none"),
    )
    instance_dir: Path = Field(
        Path("instance"),
        description="Folder for development's database, outbox and key (relative paths "
        "start at the working directory).",
    )
    crisis_text: str = Field(
        "If you are thinking about harming yourself, or you are not safe, please reach out now.",
        max_length=1000,
        description="A sentence above the crisis resources of the reader's country in every "
        "email and page (the numbers themselves come from the crisis data, "
        "docs/crisis-resources.md).",
    )
    check_deliverability: bool = Field(
        False, description="Also check at signup that the address's domain accepts mail (DNS)."
    )
    confirm_resend_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="A repeated signup re-sends the confirmation at most this often.",
    )
    batch_size: int = Field(100, ge=1, le=10000, description="Deliveries claimed at once.")
    claim_lease_seconds: int = Field(
        900,
        ge=5,
        le=86400,
        description="How long a claimed delivery stays reserved for its sender (renewed "
        "right before it is sent); then another sender may take it. Must be longer than the "
        "longest send (the SMTP timeouts).",
    )
    retry_base_seconds: int = Field(
        60,
        ge=1,
        le=86400,
        description="First retry after a temporary failure; it doubles (with jitter, at most "
        "2 h) for up to a day, then the delivery is marked failed.",
    )
    smtp_connections: int = Field(
        1, ge=1, le=64, description="SMTP connections each sender uses in parallel."
    )
    max_per_second: float | None = Field(
        None,
        ge=0,
        description="At most this many messages per second per sender process.",
        json_schema_extra=_doc("unset: no limit"),
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Other websites (comma-separated origins such as "
        "`https://yourpractice.example`) that may post the signup form or call `POST "
        "/subscribe` (CORS), and that the form's `next` may lead back to.",
        json_schema_extra=_doc("none"),
    )
    ratelimit_storage_url: str = Field(
        "memory://",
        description="Where rate limits are counted. `memory://` is per process; with several "
        "web workers use Redis, e.g. `redis://127.0.0.1:6379/0`.",
    )
    subscribe_limit_per_client: str = Field(
        "10 per minute;50 per hour", description="Signups accepted from one client address."
    )
    subscribe_limit_without_origin: str = Field(
        "3 per minute;20 per hour",
        description="Signups by JSON from a client that names no allowed origin (a script, "
        "not the practice's website), per client address.",
    )
    confirmations_per_mailbox_per_day: int = Field(
        3,
        ge=1,
        le=100,
        description="Confirmation emails one mailbox gets in 24 hours, whoever asks "
        "(`ana+x@gmail.com` and `a.na@gmail.com` count as one mailbox).",
    )
    confirmations_per_domain_per_hour: int = Field(
        100,
        ge=1,
        le=1000000,
        description="Confirmation emails to one recipient domain in an hour; further signups "
        "for that domain get none until the hour has room.",
    )
    signup_min_seconds: float | None = Field(
        None,
        ge=0,
        description="A hosted form sent back faster than this is a bot's: the answer looks "
        "normal, nothing is stored.",
        json_schema_extra=_doc("`3` (`0` in development)"),
    )
    pending_retention_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="Unconfirmed signups are deleted this many days after their last "
        "confirmation email.",
    )
    proxy_count: int = Field(
        0,
        ge=0,
        le=10,
        description="Reverse proxies in front of the web app whose `X-Forwarded-For`/`-Proto` "
        "are trusted. `1` behind one nginx; `0` when clients connect directly.",
    )
    health_max_delay_minutes: int = Field(
        30,
        ge=1,
        le=10080,
        description="`/healthz` fails when a delivery is this late past its due time.",
    )
    health_max_failed: int = Field(
        5,
        ge=1,
        le=1000000,
        description="`/healthz` fails when this many deliveries failed in 24 h (bounced "
        "readers aside).",
    )
    # -- deliverability (docs/deliverability.md) --------------------------------------------
    reply_to: str = Field(
        "",
        description="Where a reader's reply goes (a mailbox someone at the practice reads), "
        "e.g. `Your Practice <hello@yourpractice.example>`.",
        json_schema_extra=_doc("none: replies go to the From address"),
    )
    list_id: str = Field(
        "",
        description="The `List-Id` header, e.g. `Insecurity course <course.yourpractice.example>`.",
        json_schema_extra=_doc("the practice's name and `course.<From domain>`"),
    )
    ehlo_name: str = Field(
        "",
        description="The name this server gives in SMTP's EHLO (a name that resolves to it).",
        json_schema_extra=_doc("this machine's fully qualified name"),
    )
    bounce_address: str = Field(
        "",
        description="The envelope sender (Return-Path) where bounces go, e.g. "
        "`bounces@yourpractice.example`. Its mailbox is what COURSE_BOUNCE_MAILBOX_URL reads.",
        json_schema_extra=_doc("the From address"),
    )
    verp: bool = Field(
        False,
        description="Give every delivery its own envelope sender, `bounces+<id>@…` (the "
        "relay and the bounce mailbox must accept `+` addresses), so a bounce names its "
        "delivery without parsing.",
    )
    dkim_key_file: Path | None = Field(
        None,
        description="A PEM private key: the app signs every message with DKIM "
        "(`course dkim keygen` writes one and prints the DNS record).",
        json_schema_extra=_doc("none: no signing in the app"),
    )
    dkim_selector: str = Field("course", description="The DKIM selector (`<selector>._domainkey`).")
    dkim_domain: str = Field(
        "",
        description="The DKIM signing domain (`d=`); it must align with the From domain.",
        json_schema_extra=_doc("the From address's domain"),
    )
    bounce_mailbox_url: str = Field(
        "",
        description="A mailbox of bounces and complaints, read by the scheduler: "
        "`imaps://user:pass@host/INBOX`, `imap://…` (STARTTLS), `pop3s://…`, `pop3://…`.",
        json_schema_extra=_doc("none"),
    )
    replies_mailbox_url: str = Field(
        "",
        description="A mailbox of readers' replies (the Reply-To's), collected into each "
        "reader's timeline in the admin. Same forms as COURSE_BOUNCE_MAILBOX_URL.",
        json_schema_extra=_doc("none"),
    )
    mailbox_check_minutes: int = Field(
        10, ge=1, le=1440, description="How often the scheduler reads those mailboxes."
    )
    soft_bounce_limit: int = Field(
        3,
        ge=1,
        le=100,
        description="Soft bounces in a row after which a reader counts as bounced.",
    )
    mailgun_signing_key: SecretStr | None = Field(
        None,
        description="Mailgun's webhook signing key: enables `POST /webhooks/mailgun`.",
        json_schema_extra=_doc("none: the webhook is off"),
    )
    sendgrid_verification_key: str = Field(
        "",
        description="SendGrid's signed event webhook verification key (base64 public "
        "key): enables `POST /webhooks/sendgrid`.",
        json_schema_extra=_doc("none: the webhook is off"),
    )
    postmark_webhook_auth: SecretStr | None = Field(
        None,
        description="`user:password` that Postmark's webhook sends (basic auth): enables "
        "`POST /webhooks/postmark`.",
        json_schema_extra=_doc("none: the webhook is off"),
    )
    # -- care and privacy (docs/privacy.md) ---------------------------------------------------
    require_totp: bool = Field(
        False,
        description="Every staff member must sign in with a second factor (an authenticator "
        "app); they set it up at their next sign-in.",
    )
    data_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="Keys that encrypt notes and replies in the database (Fernet; "
        "comma-separated, the newest first: older ones still decrypt until `course keys "
        "rotate` re-encrypts). Required outside development; `course keys generate` makes one.",
        json_schema_extra=_doc("development: kept in `instance/data_key`"),
    )
    care_email: str = Field(
        "",
        description="Where an alert goes when a reader's note or reply matches a risk phrase "
        "(a link to the admin, never the note).",
        json_schema_extra=_doc("none: no alert emails"),
    )
    care_alert_minutes: int = Field(
        15,
        ge=1,
        le=1440,
        description="Alerts are grouped: at most one email per this many minutes.",
    )
    risk_phrases_file: Path | None = Field(
        None,
        description="The practice's own list of risk phrases (one per line; `*` ends a word "
        "stem), instead of the shipped one.",
        json_schema_extra=_doc("the shipped list"),
    )
    notes_notice: str = Field(
        "Notes are read by the practice on working days; they are not monitored around the "
        "clock. If you need help right now, please use the crisis lines on this page.",
        max_length=500,
        description="What the note form says about who reads notes, and when.",
    )
    crisis_resources_file: Path | None = Field(
        None,
        description="The practice's own crisis resources (JSON, see docs/crisis-resources.md), "
        "on top of the shipped ones.",
        json_schema_extra=_doc("none"),
    )
    crisis_countries: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Only these countries' resources are shown (comma-separated codes, e.g. "
        "`DE,AT,CH`); readers elsewhere see the worldwide directory.",
        json_schema_extra=_doc("every country in the data"),
    )
    retention_months: int = Field(
        12,
        ge=1,
        le=120,
        description="Readers who finished or left are anonymised this many months later "
        "(only anonymous counts stay).",
    )
    note_retention_days: int = Field(
        180,
        ge=1,
        le=3650,
        description="Notes and replies are deleted this many days after they were written.",
    )
    privacy_url: str = Field(
        "",
        description="The practice's privacy policy, linked from the signup form, pages and emails.",
        json_schema_extra=_doc("none"),
    )
    imprint_url: str = Field(
        "",
        description="The practice's legal notice (Impressum), linked from pages and emails.",
        json_schema_extra=_doc("none"),
    )
    postal_address: str = Field(
        "",
        max_length=300,
        description="The practice's postal address, in every email's footer (CAN-SPAM).",
        json_schema_extra=_doc("none"),
    )
    signup_consent_text: str = Field(
        "We'll send you a confirmation email first. We only use your address for this course, "
        "never share it, and you can leave with one click at any time.",
        max_length=1000,
        description="The wording under the signup form; its exact text is kept with each "
        "reader's consent record.",
    )
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING or ERROR.")

    # -- validation of single values ----------------------------------------------------

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("development", "production"):
            raise ValueError("must be development or production")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"is not a known time zone: {value!r}") from None
        return value

    @field_validator("base_url", "booking_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        if value and not urlsplit(value).hostname:
            raise ValueError("has no host name")
        return value

    @field_validator("mail_url")
    @classmethod
    def _mail_url(cls, value: str) -> str:
        value = value.strip()
        if value and not (
            value.startswith("outbox:")
            or value.split("://", 1)[0] in ("smtp", "smtp+starttls", "smtps")
        ):
            raise ValueError("must start with smtp://, smtp+starttls://, smtps:// or outbox:")
        if value.split("://", 1)[0] in ("smtp", "smtp+starttls", "smtps"):
            if not urlsplit(value).hostname:
                raise ValueError("has no host name")
        return value

    @field_validator("secret_key_fallbacks", "data_keys", mode="before")
    @classmethod
    def _secret_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("crisis_countries", mode="before")
    @classmethod
    def _countries(cls, value: Any) -> Any:
        items = _split_list(value)
        if not isinstance(items, list | tuple):
            raise ValueError("must be a list of country codes")
        codes = tuple(str(item).strip().upper() for item in items if str(item).strip())
        for code in codes:
            if not re.fullmatch(r"[A-Z]{2}", code):
                raise ValueError(f"must be two-letter country codes like DE; got {code!r}")
        return codes

    @field_validator("privacy_url", "imprint_url")
    @classmethod
    def _page_url(cls, value: str) -> str:
        value = value.strip()
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        items = _split_list(value)
        if not isinstance(items, list | tuple):
            raise ValueError("must be a list of origins")
        origins: list[str] = []
        for item in items:
            text = str(item).strip().removesuffix("/")
            origin = parse_origin(_idna_host(text))
            if origin is None:
                raise ValueError(
                    "entries must be origins like https://yourpractice.example (scheme and "
                    f"host, no path or wildcard); got {item!r}"
                )
            origins.append(origin)
        return tuple(dict.fromkeys(origins))

    @field_validator("subscribe_limit_per_client", "subscribe_limit_without_origin")
    @classmethod
    def _limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            if not parse_many(value):
                raise ValueError(value)
        except ValueError:
            raise ValueError("must be rate limits like '10 per minute;50 per hour'") from None
        return value

    @field_validator("max_per_second")
    @classmethod
    def _rate(cls, value: float | None) -> float | None:
        return None if not value else value  # 0 means no limit, like unset

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    # -- derived values -------------------------------------------------------------------

    @property
    def development(self) -> bool:
        """True for ``COURSE_ENV=development``."""
        return self.env == "development"

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """Every key that verifies a link, oldest first, the signing key last."""
        keys = [k.get_secret_value() for k in self.secret_key_fallbacks]
        if self.secret_key is not None:
            keys.append(self.secret_key.get_secret_value())
        return tuple(keys)

    @property
    def data_key_values(self) -> tuple[str, ...]:
        """The data keys as text, newest first (course.crypto)."""
        return tuple(k.get_secret_value() for k in self.data_keys)

    @property
    def mail_domain(self) -> str:
        """The domain used on the right of every Message-ID."""
        return urlsplit(self.base_url).hostname or "localhost"

    @property
    def min_signup_seconds(self) -> float:
        """The hosted form's shortest fill time (see ``signup_min_seconds``)."""
        if self.signup_min_seconds is not None:
            return self.signup_min_seconds
        return 0.0 if self.development else 3.0

    @property
    def uses_outbox(self) -> bool:
        """True when mail is written to a folder instead of being sent."""
        return self.mail_url.startswith("outbox:")

    # -- what a process needs ----------------------------------------------------------------

    def problems(self, needs: Iterable[Need]) -> list[str]:
        """Why these settings cannot serve ``needs``: one message per missing or bad setting."""
        found: list[str] = []
        needs = set(needs)
        if Need.DATABASE in needs and not self.database_url:
            found.append(
                "COURSE_DATABASE_URL is required outside development, for example "
                "postgresql+psycopg://course:password@db.internal/course"
            )
        if Need.MAIL in needs and self.mail_url:
            found.extend(self._mail_problems())
        if Need.MAIL in needs and not self.mail_url:
            found.append(
                "COURSE_MAIL_URL is required outside development, for example "
                "smtp+starttls://user:password@smtp.relay.example:587 (to write mail to a "
                "folder instead, on a staging server, set COURSE_MAIL_URL=outbox:/path)"
            )
        if Need.SECRET in needs:
            if self.secret_key is None:
                found.append(f"COURSE_SECRET_KEY is required outside development. {GENERATE_HINT}")
            elif not self.development:
                problem = secret_key_problem(self.secret_key.get_secret_value())
                if problem:
                    found.append(f"COURSE_SECRET_KEY is too weak: {problem}. {GENERATE_HINT}")
                if not self.data_keys:
                    found.append(
                        "COURSE_DATA_KEYS is required outside development: it encrypts "
                        "readers' notes and replies. Make one with `course keys generate`."
                    )
                for n, key in enumerate(self.secret_key_fallbacks, start=1):
                    problem = secret_key_problem(key.get_secret_value())
                    if problem:
                        found.append(
                            f"COURSE_SECRET_KEY_FALLBACKS entry {n} is too weak: {problem}. An "
                            "old key verifies links and the admin's cookie as the main key "
                            "does, so it must be as strong."
                        )
        if Need.SECRET in needs and self.data_keys:
            from course.crypto import DataKeyError, check_keys

            try:
                check_keys([k.get_secret_value() for k in self.data_keys])
            except DataKeyError as exc:
                found.append(str(exc))
        if Need.PUBLIC in needs:
            for name, example in (
                ("base_url", "https://course.yourpractice.example"),
                ("mail_from", "Your Practice <course@yourpractice.example>"),
                ("booking_url", "https://yourpractice.example/book"),
            ):
                if not getattr(self, name):
                    found.append(
                        f"COURSE_{name.upper()} is required outside development, for "
                        f"example {example}"
                    )
        return found

    def _mail_problems(self) -> list[str]:
        """The mail URL's options, and a claim lease that outlasts the longest send (or
        another sender could take a message still on its way and send it again)."""
        found = []
        if self.dkim_key_file:
            from course.dkim import DkimError, DkimSigner

            try:
                DkimSigner.from_file(self.dkim_key_file, self.dkim_selector, "check")
            except DkimError as exc:
                found.append(f"COURSE_DKIM_KEY_FILE ({self.dkim_key_file}) cannot be used: {exc}")
        if self.uses_outbox:
            return found
        from course.mail import transport_from_url
        from course.mail.smtp import SMTPTransport

        try:
            transport_from_url(self.mail_url)  # every option, as the sender will read them
            transport = SMTPTransport.from_url(self.mail_url)  # the timeouts
        except ValueError as exc:
            return [*found, str(exc)]
        longest = transport.timeout * 3 + transport.data_timeout  # connect, MAIL, RCPT, DATA
        if self.claim_lease_seconds <= longest:
            found.append(
                f"COURSE_CLAIM_LEASE_SECONDS ({self.claim_lease_seconds}) must be longer than "
                f"the longest send allowed by COURSE_MAIL_URL's timeouts ({longest:.0f} s)"
            )
        return found

    def require(self, *needs: Need) -> Settings:
        """Return self if it serves ``needs``, else raise :class:`ConfigError` naming all
        missing settings at once."""
        found = self.problems(needs)
        if found:
            raise ConfigError("\n".join(found))
        return self


# -- loading ----------------------------------------------------------------------------------


def setting_names() -> list[str]:
    """Every environment variable that is a setting, in declaration order."""
    return [PREFIX + name.upper() for name in Settings.model_fields]


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``COURSE_*`` variables that are not settings, each with the closest real name."""
    known = setting_names()
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper.startswith(RESERVED_PREFIXES) or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        found.append((name, close[0] if close else None))
    return found


def warn_unknown(environ: Mapping[str, str]) -> None:
    """Log a warning for each ``COURSE_*`` variable that is not a setting (a typo?)."""
    for name, close in unknown_variables(environ):
        hint = f"; did you mean {close}?" if close else ""
        log.warning("%s is not a setting and is ignored%s", name, hint)


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, listen: tuple[str, int] | None = None
) -> Settings:
    """Read the ``COURSE_*`` environment (``overrides`` win), validated, with development's
    defaults filled in. Raises :class:`ConfigError` with a clear message.

    ``listen`` is where ``course run`` serves: in development, links follow it unless
    ``COURSE_BASE_URL`` is set (otherwise they follow ``HOST`` and ``PORT``).
    """
    warn_unknown(os.environ)
    values = {key.lower(): value for key, value in (overrides or {}).items()}
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    instance = settings.instance_dir.expanduser().resolve()
    fill: dict[str, Any] = {"instance_dir": instance}
    if settings.mail_url in ("outbox:", "outbox"):
        fill["mail_url"] = f"outbox:{instance / 'outbox'}"
    if settings.development:
        fill.update(_development_defaults(settings, instance, listen))
    return settings.model_copy(update=fill)


def _development_defaults(
    settings: Settings, instance: Path, listen: tuple[str, int] | None
) -> dict[str, Any]:
    """What development fills in when it is not set."""
    fill: dict[str, Any] = {}
    if not settings.database_url:
        fill["database_url"] = f"sqlite:///{instance / 'course.db'}"
    if not settings.mail_url:
        fill["mail_url"] = f"outbox:{instance / 'outbox'}"
    if settings.secret_key is None:
        fill["secret_key"] = SecretStr(_development_secret(instance))
    if not settings.data_keys:
        from course.crypto import development_key

        fill["data_keys"] = (SecretStr(development_key(instance)),)
    if not settings.base_url:
        environ = dict(os.environ)
        if listen is not None:
            environ.update(HOST=listen[0], PORT=str(listen[1]))
        fill["base_url"] = development_base_url(environ)
    if not settings.mail_from:
        fill["mail_from"] = "Course <course@localhost>"
    if not settings.booking_url:
        fill["booking_url"] = "https://example.org/book"
    return fill


def development_base_url(environ: Mapping[str, str]) -> str:
    """``http://HOST:PORT`` as ``make run`` serves it (a wildcard host as 127.0.0.1)."""
    host = environ.get("HOST", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # a listening address, not one a browser can open
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("PORT", "").strip() or "5000"
    if not port.isdigit():
        raise ConfigError(f"PORT must be a port number, got {port!r}")
    return f"http://{host}:{int(port)}"


def _describe(exc: ValidationError) -> str:
    """A pydantic error as lines an operator can act on: the variable, what is wrong."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = PREFIX + field.upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, setting_names(), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"{name} is not a setting{hint}")
            continue
        value = error.get("input")
        shown = "" if "secret" in field or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{name}: {message}{shown}")
    return "\n".join(lines)


# -- secrets ------------------------------------------------------------------------------------

#: The shortest secret key accepted outside development (``secrets.token_hex(32)`` gives 64).
MIN_SECRET_LENGTH = 32
#: Words found in example and placeholder keys. A key that is nothing but these (and
#: punctuation) is a placeholder, however long.
_PLACEHOLDER_WORDS = (
    "changeme",
    "change",
    "replace",
    "secret",
    "password",
    "passwd",
    "default",
    "development",
    "example",
    "insecure",
    "notasecret",
    "please",
    "test",
    "your",
    "todo",
    "key",
    "me",
    # "generate-with-python-c-import-secrets-print-secrets-token-hex-32" and the like
    "generate",
    "python",
    "import",
    "print",
    "token",
    "with",
    "hex",
)
GENERATE_HINT = "Generate one with\n  python3 -c 'import secrets; print(secrets.token_hex(32))'"


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` is too weak to sign links and cookies, or None if it is fine.

    Never includes the key itself in the answer: the message ends up in logs.
    """
    if len(key) < MIN_SECRET_LENGTH:
        return f"it must be at least {MIN_SECRET_LENGTH} characters long"
    # What is left after taking out punctuation and placeholder words must still look
    # random: long enough, and not one or two characters repeated ("kkkk...", "abab...").
    rest = "".join(ch for ch in key.lower() if ch.isalnum())
    for word in _PLACEHOLDER_WORDS:
        rest = rest.replace(word, "")
    if len(rest) < 16 or len(set(rest)) < 6:
        return "it looks like a placeholder or a pattern, not a random key"
    return None


def _development_secret(instance: Path) -> str:
    """Create once and then reuse a secret in the instance folder, so links survive restarts."""
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


# -- origins ------------------------------------------------------------------------------------

_ORIGIN = re.compile(
    r"(https?)://"
    r"([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])"
    r"(?::([0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(value: object) -> str | None:
    """``value`` as a normalised web origin (``https://host[:port]``), or None.

    Only the exact form of an ``Origin`` header is accepted: scheme, host and port, nothing
    else. Scheme and host are compared case-insensitively (as browsers do) and a default
    port is dropped; everything unusual (user info, a path, backslashes, whitespace, a
    trailing dot, non-ASCII) makes it None, so a look-alike can never match by accident.
    """
    if not isinstance(value, str) or not 0 < len(value) <= 300:
        return None
    if not value.isascii() or not value.isprintable() or " " in value:
        return None
    match = _ORIGIN.fullmatch(value.lower())
    if match is None:
        return None
    scheme, host, port_text = match.groups()
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    return f"{scheme}://{host}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


def _idna_host(url: str) -> str:
    """An internationalised host name in its ASCII form, as browsers send it."""
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.partition(":")
    if not sep or host.isascii():
        return url
    try:
        host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        return url
    return f"{scheme}{sep}{host}{colon}{port}"


# -- showing the configuration --------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def effective(settings: Settings) -> list[tuple[str, str]]:
    """Each setting's variable name and value as text, secrets masked."""
    rows = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "*** (set)"
        elif name in ("secret_key_fallbacks", "data_keys"):
            shown = f"*** ({len(value)} key(s))" if value else ""
        elif name.endswith("_url") and isinstance(value, str):
            shown = mask_url(value)
        elif isinstance(value, tuple):
            shown = ",".join(str(v) for v in value)
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        rows.append((PREFIX + name.upper(), shown))
    return rows


def markdown_table() -> str:
    """The README's configuration table, generated from the declared settings."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        default = extra.get("doc_default")
        if default is None:
            value = field.default
            shown = str(value.value if isinstance(value, StrEnum) else value)
            default = f"`{shown}`" if value not in (None, "", ()) else "none"
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{PREFIX}{name.upper()}` | {default} | {description} |")
    return "\n".join(lines) + "\n"
