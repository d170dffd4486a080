"""Settings: the embedded defaults, the ``COURSE_*`` environment, and the plain ``Settings`` object.

Flask reads the environment (``app.config.from_prefixed_env("COURSE")``); everything that
runs without Flask (the sending engine, the scheduler) gets a frozen :class:`Settings` built
from that same mapping, so there is exactly one place where configuration is parsed.
"""

from __future__ import annotations

import re
import secrets
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import idna

#: Defaults that make ``make run`` work on a fresh machine. Paths are relative to the
#: Flask instance folder and resolved by :func:`resolve_instance_paths`.
DEFAULTS: dict[str, Any] = {
    "ENV": "production",
    "DATABASE_URL": None,  # None: sqlite:///<instance>/course.db
    "MAIL_URL": "outbox:",  # outbox: with no path means <instance>/outbox
    "SECRET_KEY": None,
    "SECRET_KEY_FALLBACKS": [],
    "BASE_URL": "http://127.0.0.1:5000",
    "MAIL_FROM": "Course <course@localhost>",
    "PRACTICE_NAME": "Our practice",
    "BOOKING_URL": "https://example.org/book",
    "SEND_HOUR": 8,
    "DEFAULT_TIMEZONE": "UTC",
    "TICK_SECONDS": 5,
    "LESSON_INTERVAL": None,  # None: calendar days at the send hour
    "LESSONS_DIR": None,  # None: ./lessons next to the project
    "CHECK_DELIVERABILITY": False,
    "CONFIRM_RESEND_SECONDS": 300,
    "CRISIS_TEXT": (
        "If you are in crisis or thinking about harming yourself, please reach out now: "
        "call your local emergency number, or contact a crisis line in your country "
        "(findahelpline.com lists free, confidential lines worldwide)."
    ),
    "BATCH_SIZE": 100,
    "CLAIM_LEASE_SECONDS": 300,
    "RETRY_BASE_SECONDS": 60,
    "MAX_PER_SECOND": None,  # None: no sending rate limit
    "SMTP_CONNECTIONS": 1,
    # Other websites (the practice's own) that may post the signup form or call the JSON
    # endpoint, and that the form's ``next`` may send the visitor back to.
    "ALLOWED_ORIGINS": [],
    "PENDING_RETENTION_DAYS": 7,  # unconfirmed signups are deleted after this many days
    "SIGNUP_MIN_SECONDS": None,  # None: 3 seconds, or 0 in development
    "SUBSCRIBE_LIMIT_PER_CLIENT": "10 per minute;50 per hour",
    "SUBSCRIBE_LIMIT_PER_ADDRESS": "5 per hour;20 per day",
    "PROXY_COUNT": 0,  # reverse proxies in front of the app whose X-Forwarded-* we trust
}

#: The shortest gap between two lessons in calendar mode. A lesson sent late (after an
#: outage, or a resume) pushes the next one to the following send hour instead of letting
#: two arrive a few hours apart.
MIN_CALENDAR_GAP_HOURS = 20


class ConfigError(RuntimeError):
    """A setting is missing or has a value the app cannot run with."""


@dataclass(frozen=True)
class Settings:
    """The settings the Flask-free parts of the engine need."""

    database_url: str
    mail_url: str
    secret_keys: tuple[str, ...]  # newest last, as itsdangerous expects
    base_url: str
    mail_from: str
    practice_name: str
    booking_url: str
    send_hour: int
    default_timezone: str
    tick_seconds: float
    lesson_interval: float | None
    lessons_dir: Path
    templates_dir: Path
    check_deliverability: bool
    confirm_resend_seconds: int
    crisis_text: str
    batch_size: int
    claim_lease_seconds: int
    retry_base_seconds: int
    max_per_second: float | None
    smtp_connections: int
    allowed_origins: tuple[str, ...] = ()
    pending_retention_days: int = 7
    signup_min_seconds: float = 3.0
    subscribe_limit_per_client: str = "10 per minute;50 per hour"
    subscribe_limit_per_address: str = "5 per hour;20 per day"
    proxy_count: int = 0

    @property
    def mail_domain(self) -> str:
        """The domain used on the right of every Message-ID."""
        return urlsplit(self.base_url).hostname or "localhost"


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _as_int(name: str, value: Any, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"COURSE_{name} must be a whole number, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(f"COURSE_{name} must be between {lo} and {hi}, got {number}")
    return number


def _as_float(name: str, value: Any, lo: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"COURSE_{name} must be a number, got {value!r}") from None
    if number < lo:
        raise ConfigError(f"COURSE_{name} must be at least {lo}, got {number}")
    return number


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


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
_GENERATE_HINT = "Generate one with\n  python -c 'import secrets; print(secrets.token_hex(32))'"


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


def resolve_instance_paths(config: dict[str, Any], instance_path: str) -> None:
    """Fill in defaults that live in the instance folder (database, outbox, dev secret).

    Outside development, a missing or weak ``COURSE_SECRET_KEY`` stops the app here: every
    link and the admin's session cookie are only as safe as this key.
    """
    instance = Path(instance_path)
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = f"sqlite:///{instance / 'course.db'}"
    if config.get("MAIL_URL") in ("outbox:", "outbox", None):
        config["MAIL_URL"] = f"outbox:{instance / 'outbox'}"
    development = config.get("ENV") == "development"
    if not config.get("SECRET_KEY"):
        if not development:
            raise ConfigError(
                f"COURSE_SECRET_KEY is required outside development. {_GENERATE_HINT}\n"
                "or set COURSE_ENV=development to use a key kept in the instance folder."
            )
        config["SECRET_KEY"] = _development_secret(instance)
    elif not development:
        problem = secret_key_problem(str(config["SECRET_KEY"]))
        if problem:
            raise ConfigError(f"COURSE_SECRET_KEY is too weak: {problem}. {_GENERATE_HINT}")
    if config.get("SIGNUP_MIN_SECONDS") in (None, ""):
        # In development a person trying the form (or a browser test) is not held back.
        config["SIGNUP_MIN_SECONDS"] = 0 if development else 3


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


def _as_origins(value: Any) -> tuple[str, ...]:
    """``COURSE_ALLOWED_ORIGINS``: a JSON list or comma-separated origins."""
    if value in (None, ""):
        return ()
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError("COURSE_ALLOWED_ORIGINS must be a list of origins")
    origins: list[str] = []
    for item in items:
        if item == "":
            continue
        text = str(item).strip().removesuffix("/")
        origin = parse_origin(_idna_host(text))
        if origin is None:
            raise ConfigError(
                "COURSE_ALLOWED_ORIGINS entries must be origins like https://yourpractice.example"
                f" (scheme and host, no path or wildcard); got {item!r}"
            )
        origins.append(origin)
    return tuple(dict.fromkeys(origins))


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


def _as_limit(name: str, value: Any) -> str:
    """A Flask-Limiter rate limit string such as ``10 per minute;50 per hour``."""
    from limits import parse_many

    text = str(value)
    try:
        if not parse_many(text):
            raise ValueError(text)
    except ValueError:
        raise ConfigError(
            f"COURSE_{name} must be rate limits like '10 per minute;50 per hour', got {text!r}"
        ) from None
    return text


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """Validate a Flask config mapping and return the engine's :class:`Settings`."""
    tz = str(config["DEFAULT_TIMEZONE"])
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"COURSE_DEFAULT_TIMEZONE is not a known time zone: {tz!r}") from None
    interval = config.get("LESSON_INTERVAL")
    fallbacks = config.get("SECRET_KEY_FALLBACKS") or []
    if isinstance(fallbacks, str):
        fallbacks = [k for k in fallbacks.split(",") if k]
    base_url = str(config["BASE_URL"]).rstrip("/")
    if urlsplit(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"COURSE_BASE_URL must start with http:// or https://: {base_url!r}")
    lessons_dir = config.get("LESSONS_DIR") or PROJECT_ROOT / "lessons"
    return Settings(
        database_url=str(config["DATABASE_URL"]),
        mail_url=str(config["MAIL_URL"]),
        secret_keys=(*[str(k) for k in fallbacks], str(config["SECRET_KEY"])),
        base_url=base_url,
        mail_from=str(config["MAIL_FROM"]),
        practice_name=str(config["PRACTICE_NAME"]),
        booking_url=str(config["BOOKING_URL"]),
        send_hour=_as_int("SEND_HOUR", config["SEND_HOUR"], 0, 23),
        default_timezone=tz,
        tick_seconds=_as_float("TICK_SECONDS", config["TICK_SECONDS"], 0.1),
        lesson_interval=(
            None if interval in (None, "") else _as_float("LESSON_INTERVAL", interval, 1)
        ),
        lessons_dir=Path(lessons_dir),
        templates_dir=PROJECT_ROOT / "templates",
        check_deliverability=_as_bool(config["CHECK_DELIVERABILITY"]),
        confirm_resend_seconds=_as_int(
            "CONFIRM_RESEND_SECONDS", config["CONFIRM_RESEND_SECONDS"], 0, 86400
        ),
        crisis_text=str(config["CRISIS_TEXT"]),
        batch_size=_as_int("BATCH_SIZE", config["BATCH_SIZE"], 1, 10000),
        claim_lease_seconds=_as_int("CLAIM_LEASE_SECONDS", config["CLAIM_LEASE_SECONDS"], 5, 86400),
        retry_base_seconds=_as_int("RETRY_BASE_SECONDS", config["RETRY_BASE_SECONDS"], 1, 86400),
        max_per_second=(
            None
            if config.get("MAX_PER_SECOND") in (None, "", 0)
            else _as_float("MAX_PER_SECOND", config["MAX_PER_SECOND"], 0.01)
        ),
        smtp_connections=_as_int("SMTP_CONNECTIONS", config["SMTP_CONNECTIONS"], 1, 64),
        allowed_origins=_as_origins(config.get("ALLOWED_ORIGINS")),
        pending_retention_days=_as_int(
            "PENDING_RETENTION_DAYS", config.get("PENDING_RETENTION_DAYS", 7), 1, 3650
        ),
        signup_min_seconds=_as_float(
            "SIGNUP_MIN_SECONDS",
            3 if config.get("SIGNUP_MIN_SECONDS") in (None, "") else config["SIGNUP_MIN_SECONDS"],
            0,
        ),
        subscribe_limit_per_client=_as_limit(
            "SUBSCRIBE_LIMIT_PER_CLIENT",
            config.get("SUBSCRIBE_LIMIT_PER_CLIENT") or DEFAULTS["SUBSCRIBE_LIMIT_PER_CLIENT"],
        ),
        subscribe_limit_per_address=_as_limit(
            "SUBSCRIBE_LIMIT_PER_ADDRESS",
            config.get("SUBSCRIBE_LIMIT_PER_ADDRESS") or DEFAULTS["SUBSCRIBE_LIMIT_PER_ADDRESS"],
        ),
        proxy_count=_as_int("PROXY_COUNT", config.get("PROXY_COUNT", 0), 0, 10),
    )
