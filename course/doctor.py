"""``course doctor``: check a practice's setup and say how to fix each problem.

Five areas, each checked the way the running app would meet it:

- ``config``: the settings a server needs (``Settings.problems``), plus what is legal but
  usually a mistake on a server (the outbox, development mode, no bounce processing).
- ``database``: a connection, ``SELECT 1``, and migrations at the code's head revision.
- ``smtp``: a real conversation with the relay: EHLO, STARTTLS, AUTH, and a test envelope
  (MAIL FROM, RCPT TO, then RSET and QUIT). DATA is never sent, so nothing is delivered.
- ``content``: templates and lessons, rendered as a sender would (``course.checks``).
- ``dns``: SPF, DKIM, DMARC and MX for the From domain and the bounce domain, looked up with
  dnspython (the system's resolver, or one named with ``nameserver``), and whether the DKIM
  and bounce domains align with the From domain as DMARC requires.

Every finding is OK, a warning (legal, but mail may suffer) or a problem (mail will fail or
be refused), and every warning and problem carries a fix in plain words. No check raises:
timeouts, refused connections and missing records all become findings, so one broken part
never hides the others. Nothing here needs Flask.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import secrets
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.resolver
from pydantic import SecretStr

from course.config import ALL_NEEDS, Settings, mask_url

#: The areas, in the order they are checked and shown.
AREAS = ("config", "database", "smtp", "content", "dns")

#: Below this, a relay's SIZE limit is too small for a lesson email with its HTML part.
MIN_RELAY_SIZE = 1_000_000
#: RFC 7208 section 4.6.4: an SPF check may cause at most 10 DNS lookups.
SPF_MAX_LOOKUPS = 10

UPGRADE_FIX = "run `course db upgrade`"


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warning"
    FAIL = "problem"


@dataclass(frozen=True)
class Finding:
    """One result: its area, how bad it is, what was found and how to fix it."""

    area: str
    level: Level
    what: str
    fix: str | None = None


def run_checks(
    settings: Settings,
    *,
    nameserver: str | None = None,
    port: int = 53,
    smtp: bool = True,
    dns: bool = True,
    timeout: float = 5.0,
    probe_recipient: str | None = None,
) -> list[Finding]:
    """Check everything (``smtp``/``dns`` False skip those areas); never raises.

    ``nameserver`` (an IP address, with ``port``) replaces the system's resolver;
    ``timeout`` is the wait in seconds for each network answer; ``probe_recipient`` is the
    RCPT TO of the SMTP test envelope (default ``postmaster@<From domain>``).
    """
    sections: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("config", lambda: check_config(settings)),
        ("database", lambda: check_database(settings, timeout=timeout)),
    ]
    if smtp:
        sections.append(
            ("smtp", lambda: check_smtp(settings, timeout=timeout, recipient=probe_recipient))
        )
    sections.append(("content", lambda: check_content_files(settings)))
    if dns:
        sections.append(
            ("dns", lambda: check_dns(settings, nameserver=nameserver, port=port, timeout=timeout))
        )
    findings: list[Finding] = []
    for area, check in sections:
        try:
            findings.extend(check())
        except Exception as exc:  # a bug in one check must not hide the others
            findings.append(
                Finding(
                    area,
                    Level.FAIL,
                    f"this check stopped with an error: {type(exc).__name__}: {exc}",
                    "this is a bug in `course doctor`; please report it with this line",
                )
            )
    return findings


# -- helpers ----------------------------------------------------------------------------------


def address_of(value: str) -> str:
    """The bare address in ``Name <addr>`` (or ``addr``); empty when there is none."""
    address = parseaddr(value)[1].strip()
    return address if "@" in address else ""


def domain_of(address: str) -> str:
    """The domain of an address, lower case, without a final dot."""
    return address.rpartition("@")[2].strip().rstrip(".").lower() if "@" in address else ""


def organisational_domain(domain: str) -> str:
    """An approximation of DMARC's organisational domain: the last two labels, or three
    under a two-letter country code with a generic second level (``example.co.uk``)."""
    labels = domain.lower().rstrip(".").split(".")
    generic = {"co", "com", "net", "org", "ac", "gov", "edu"}
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in generic:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC's relaxed alignment, approximately: the same domain, one a subdomain of the
    other, or the same organisational domain."""
    a, b = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return (
        a == b
        or a.endswith("." + b)
        or b.endswith("." + a)
        or organisational_domain(a) == organisational_domain(b)
    )


def _public_domain(domain: str) -> bool:
    """Could DNS on the internet know this domain? (``localhost`` and the like cannot.)"""
    if "." not in domain or domain.startswith("["):
        return False
    return not (
        domain == "localhost" or domain.endswith((".localhost", ".local", ".invalid", ".test"))
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _first_line(exc: BaseException) -> str:
    """An exception as one short line (SQLAlchemy's background links and SQL left out)."""
    inner = getattr(exc, "orig", None)
    text = str(inner if inner is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


# -- configuration ----------------------------------------------------------------------------

_VARIABLE = re.compile(r"COURSE_[A-Z0-9_]*[A-Z0-9]")


def check_config(settings: Settings) -> list[Finding]:
    """The settings a server needs, and the ones that are legal but usually a mistake."""
    out: list[Finding] = []

    def add(level: Level, what: str, fix: str | None = None) -> None:
        out.append(Finding("config", level, what, fix))

    problems = settings.problems(ALL_NEEDS)
    for problem in problems:
        match = _VARIABLE.search(problem)
        name = match.group(0) if match else "the setting"
        add(
            Level.FAIL,
            problem,
            f"set {name} in the environment the app runs with (e.g. /etc/course/course.env); "
            "`course config` shows the effective settings",
        )
    if not problems:
        add(Level.OK, "every required setting is set (database, mail, secret key, addresses)")
    if settings.development:
        add(
            Level.WARN,
            "COURSE_ENV is development: fine on a laptop, not on the server readers use",
            "remove COURSE_ENV on the server (production is the default)",
        )
    if settings.uses_outbox:
        add(
            Level.WARN,
            "COURSE_MAIL_URL writes mail to a folder (outbox:): nothing reaches readers",
            "set COURSE_MAIL_URL to your relay, e.g. "
            "smtp+starttls://user:password@smtp.relay.example:587",
        )
    if settings.mail_from and not address_of(settings.mail_from):
        add(
            Level.FAIL,
            f"COURSE_MAIL_FROM has no email address: {settings.mail_from!r}",
            "set it like: Your Practice <course@yourpractice.example>",
        )
    if settings.reply_to:
        reply = address_of(settings.reply_to)
        if reply:
            add(Level.OK, f"replies go to {reply} (COURSE_REPLY_TO)")
        else:
            add(
                Level.FAIL,
                f"COURSE_REPLY_TO has no email address: {settings.reply_to!r}",
                "set it like: Your Practice <hello@yourpractice.example>",
            )
    elif address_of(settings.mail_from):
        add(
            Level.OK,
            f"replies go to the From address {address_of(settings.mail_from)} (no "
            "COURSE_REPLY_TO): make sure someone reads that mailbox",
        )
    if settings.bounce_address and not address_of(settings.bounce_address):
        add(
            Level.FAIL,
            f"COURSE_BOUNCE_ADDRESS is not an email address: {settings.bounce_address!r}",
            "set it like: bounces@yourpractice.example",
        )
    out.extend(_bounce_processing(settings))
    out.extend(_dkim_key(settings))
    return out


def _bounce_processing(settings: Settings) -> list[Finding]:
    sources = []
    if settings.bounce_mailbox_url:
        sources.append("the bounce mailbox (COURSE_BOUNCE_MAILBOX_URL)")
    for name, value in (
        ("Mailgun", settings.mailgun_signing_key),
        ("SendGrid", settings.sendgrid_verification_key),
        ("Postmark", settings.postmark_webhook_auth),
    ):
        if value:
            sources.append(f"{name}'s webhook")
    if not sources:
        return [
            Finding(
                "config",
                Level.WARN,
                "bounces and complaints that arrive after sending are not processed: "
                "readers whose address stopped working, or who marked a lesson as spam, "
                "keep getting mail",
                "set COURSE_BOUNCE_MAILBOX_URL to the mailbox the bounce address delivers to, "
                "or your provider's webhook key (COURSE_MAILGUN_SIGNING_KEY, "
                "COURSE_SENDGRID_VERIFICATION_KEY or COURSE_POSTMARK_WEBHOOK_AUTH); see "
                "docs/deliverability.md",
            )
        ]
    found = [
        Finding("config", Level.OK, "bounces and complaints are read from " + ", ".join(sources))
    ]
    if settings.verp:
        found.append(
            Finding(
                "config",
                Level.OK,
                "VERP is on: each message has its own envelope sender (bounces+…@); the "
                "relay and the bounce mailbox must accept + addresses",
            )
        )
    return found


def _dkim_key(settings: Settings) -> list[Finding]:
    if settings.dkim_key_file is None:
        return []
    from course.dkim import DkimError, public_key_b64

    path = settings.dkim_key_file
    try:
        public_key_b64(path.read_bytes())
    except OSError as exc:
        problem = f"COURSE_DKIM_KEY_FILE cannot be read ({path}: {exc.strerror})"
    except DkimError as exc:
        problem = f"COURSE_DKIM_KEY_FILE is not usable ({path}: {exc})"
    else:
        return [
            Finding(
                "config",
                Level.OK,
                f"the app signs with DKIM: key {path}, selector {settings.dkim_selector}",
            )
        ]
    return [
        Finding(
            "config",
            Level.FAIL,
            problem,
            "point COURSE_DKIM_KEY_FILE at the PEM key file (readable by the app's user), "
            "or make a new one with `course dkim keygen /etc/course/dkim.pem` and publish "
            "the record it prints",
        )
    ]


# -- database ---------------------------------------------------------------------------------


def check_database(settings: Settings, *, timeout: float = 5.0) -> list[Finding]:
    """Connect, ``SELECT 1``, and compare the migrations with the code's head revision.

    Reads only: a missing SQLite file is reported, not created.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from course.db import alembic_config

    if not settings.database_url:
        return []  # the configuration check names the missing setting
    try:
        url = make_url(settings.database_url)
    except Exception as exc:
        return [
            Finding(
                "database",
                Level.FAIL,
                f"COURSE_DATABASE_URL is not a database URL: {_first_line(exc)}",
                "use a SQLAlchemy URL, e.g. postgresql+psycopg://user:password@host/course",
            )
        ]
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database and url.database != ":memory:":
        if not Path(url.database).is_file():
            return [
                Finding(
                    "database",
                    Level.FAIL,
                    f"the SQLite database file {url.database} does not exist",
                    f"{UPGRADE_FIX} (it creates the file), or correct COURSE_DATABASE_URL",
                )
            ]
    connect_args: dict[str, Any] = {}
    if backend in ("postgresql", "mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, round(timeout))
    try:
        engine = create_engine(settings.database_url, poolclass=NullPool, connect_args=connect_args)
    except Exception as exc:
        return [
            Finding(
                "database",
                Level.FAIL,
                f"cannot use {shown}: {_first_line(exc)}",
                "check COURSE_DATABASE_URL (is the database driver installed?)",
            )
        ]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:
        return [
            Finding(
                "database",
                Level.FAIL,
                f"cannot use the database {shown}: {_first_line(exc)}",
                "check COURSE_DATABASE_URL (host, port, user, password, database name) and "
                "that the database server is running and reachable from this machine",
            )
        ]
    finally:
        engine.dispose()
    out = [Finding("database", Level.OK, f"connected to {shown}")]
    script = ScriptDirectory.from_config(alembic_config(settings.database_url))
    heads = set(script.get_heads())
    if current == heads:
        out.append(Finding("database", Level.OK, f"migrations are up to date ({_revs(heads)})"))
    elif not current:
        out.append(
            Finding(
                "database",
                Level.FAIL,
                "the database has no tables yet (never migrated)",
                UPGRADE_FIX,
            )
        )
    else:
        unknown = [rev for rev in current if not _known_revision(script, rev)]
        if unknown:
            out.append(
                Finding(
                    "database",
                    Level.FAIL,
                    f"the database is at revision {_revs(current)}, which this version of the "
                    "app does not know (a newer version migrated it)",
                    "run the version of the app that migrated this database, or restore it "
                    "from a backup made with this version",
                )
            )
        else:
            out.append(
                Finding(
                    "database",
                    Level.FAIL,
                    f"the database is at revision {_revs(current)}; this version of the app "
                    f"needs {_revs(heads)}",
                    UPGRADE_FIX,
                )
            )
    return out


def _revs(revisions: set[str]) -> str:
    return ", ".join(sorted(revisions)) or "none"


def _known_revision(script: Any, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:
        return False


# -- SMTP relay -------------------------------------------------------------------------------


class _Stop(Exception):
    """The SMTP conversation cannot go on (the finding is recorded already)."""


def check_smtp(
    settings: Settings, *, timeout: float = 5.0, recipient: str | None = None
) -> list[Finding]:
    """Talk to the relay as the sender does, up to RCPT TO; never DATA, so nothing is sent."""
    from course.mail.smtp import SMTPTransport

    if not settings.mail_url or settings.uses_outbox:
        return []  # the configuration check covers both
    out: list[Finding] = []

    def add(level: Level, what: str, fix: str | None = None) -> None:
        out.append(Finding("smtp", level, what, fix))

    try:
        relay = SMTPTransport.from_url(settings.mail_url)
    except (ValueError, KeyError) as exc:
        add(
            Level.FAIL,
            f"COURSE_MAIL_URL cannot be used ({mask_url(settings.mail_url)}): {exc}",
            "write it like smtp+starttls://user:password@smtp.relay.example:587",
        )
        return out
    where = f"{relay.host}:{relay.port}"
    loopback = _is_loopback(relay.host)
    context = _context(relay)
    if not relay.verify and not loopback:
        add(
            Level.WARN,
            "COURSE_MAIL_URL has ?verify=false: the relay's certificate is not checked, "
            "so anyone on the way could read and change the mail",
            "remove ?verify=false (it is for a test relay only)",
        )
    try:
        client: smtplib.SMTP
        if relay.security == "tls":
            client = smtplib.SMTP_SSL(
                relay.host,
                relay.port,
                local_hostname=settings.ehlo_name or None,
                timeout=timeout,
                context=context,
            )
        else:
            client = smtplib.SMTP(
                relay.host, relay.port, local_hostname=settings.ehlo_name or None, timeout=timeout
            )
    except ssl.SSLCertVerificationError as exc:
        add(
            Level.FAIL,
            f"the relay at {where} has a certificate that is not valid: {exc}",
            _CERT_FIX,
        )
        return out
    except ssl.SSLError as exc:
        add(
            Level.FAIL,
            f"TLS with the relay at {where} failed: {exc}",
            "smtps:// is for relays that speak TLS from the start (port 465); for port 587 "
            "use smtp+starttls://",
        )
        return out
    except smtplib.SMTPConnectError as exc:
        add(
            Level.FAIL,
            f"the relay at {where} refused the connection: {exc.smtp_code} "
            f"{_reply_text(exc.smtp_error)}",
            "the relay does not accept connections from this machine: check with its provider",
        )
        return out
    except (OSError, smtplib.SMTPException) as exc:
        add(Level.FAIL, f"cannot connect to the relay at {where}: {exc}", _connect_fix(relay.port))
        return out
    try:
        _conversation(client, relay, settings, recipient, loopback, add)
    except _Stop:
        pass
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass
        client.close()
    return out


_CERT_FIX = (
    "use the relay's name exactly as its provider gives it in COURSE_MAIL_URL (the certificate "
    "is issued for that name); ?verify=false is for a test relay only"
)


def _connect_fix(port: int) -> str:
    fix = (
        "check the host and port in COURSE_MAIL_URL and that the relay is running; a "
        "firewall may block the connection"
    )
    if port == 25:
        fix += " (many hosting providers block outgoing port 25: use the relay's port 587 "
        fix += "with smtp+starttls:// or 465 with smtps://)"
    return fix


def _conversation(
    client: smtplib.SMTP,
    relay: Any,
    settings: Settings,
    recipient: str | None,
    loopback: bool,
    add: Callable[..., None],
) -> None:
    """EHLO, TLS, AUTH, the relay's extensions and the test envelope. Raises :class:`_Stop`
    when the conversation cannot go on."""
    where = f"{relay.host}:{relay.port}"
    step = "EHLO"
    try:
        code, reply = client.ehlo()
        if code != 250:
            code, reply = client.helo()
            if code != 250:
                add(
                    Level.FAIL,
                    f"the relay at {where} refused EHLO and HELO: {code} {_reply_text(reply)}",
                    "set COURSE_EHLO_NAME to this server's DNS name (the relay may check it)",
                )
                raise _Stop
            add(
                Level.WARN,
                f"the relay at {where} does not speak ESMTP (no EHLO): no TLS, AUTH, SIZE or "
                "SMTPUTF8",
                "use a current relay (any provider's submission port speaks ESMTP)",
            )
        greeting = _reply_text(reply).split(" ")[0] if reply else "?"
        add(Level.OK, f"connected to the relay at {where} ({greeting})")
        if not settings.ehlo_name and not loopback:
            name = client.local_hostname
            if "." not in name or name.endswith((".localdomain", ".local", ".internal")):
                add(
                    Level.WARN,
                    f"this machine introduces itself as {name!r} in EHLO, which is not a public "
                    "DNS name; some relays refuse that",
                    "set COURSE_EHLO_NAME to this server's DNS name",
                )
        step = "STARTTLS"
        _security(client, relay, loopback, add)
        step = "AUTH"
        _auth(client, relay, loopback, add)
        _extensions(client, add)
        step = "the test envelope"
        _envelope(client, settings, recipient, add)
    except _Stop:
        raise
    except ssl.SSLCertVerificationError as exc:
        add(
            Level.FAIL,
            f"the relay at {where} has a certificate that is not valid: {exc}",
            _CERT_FIX,
        )
        raise _Stop from None
    except smtplib.SMTPServerDisconnected as exc:
        add(
            Level.FAIL,
            f"the relay at {where} closed the connection during {step}: {exc}",
            "check the relay's logs, or ask its provider why it drops this server",
        )
        raise _Stop from None
    except (OSError, smtplib.SMTPException) as exc:
        add(
            Level.FAIL,
            f"the relay at {where} failed during {step}: {type(exc).__name__}: {exc}",
            "check the relay's settings and logs (or COURSE_MAIL_URL's options)",
        )
        raise _Stop from None


def _security(client: smtplib.SMTP, relay: Any, loopback: bool, add: Callable[..., None]) -> None:
    if relay.security == "starttls":
        if not client.has_extn("starttls"):
            add(
                Level.FAIL,
                f"COURSE_MAIL_URL asks for STARTTLS but the relay at {relay.host}:{relay.port} "
                "does not offer it",
                "use the relay's submission port (587) with smtp+starttls://, or smtps:// on "
                "port 465",
            )
            raise _Stop
        client.starttls(context=_context(relay))
        client.ehlo()
        add(Level.OK, f"STARTTLS: the connection is encrypted ({_tls_version(client)})")
    elif relay.security == "tls":
        add(
            Level.OK,
            f"TLS from the start (smtps): the connection is encrypted ({_tls_version(client)})",
        )
    elif loopback:
        add(Level.OK, "plain SMTP to a relay on this machine (the connection does not leave it)")
    elif client.has_extn("starttls"):
        add(
            Level.WARN,
            f"plain smtp:// to {relay.host}, which offers STARTTLS: the password and every "
            "lesson cross the network unencrypted",
            "use smtp+starttls:// in COURSE_MAIL_URL",
        )
    else:
        add(
            Level.WARN,
            f"plain smtp:// to {relay.host}, which offers no encryption: the password and "
            "every lesson cross the network unencrypted",
            "use a relay with TLS: smtp+starttls:// on port 587 or smtps:// on port 465",
        )


def _context(relay: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not relay.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _tls_version(client: smtplib.SMTP) -> str:
    sock = client.sock
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    return version or "TLS"


def _auth(client: smtplib.SMTP, relay: Any, loopback: bool, add: Callable[..., None]) -> None:
    if not relay.username:
        if not loopback:
            add(
                Level.OK,
                "no user name in COURSE_MAIL_URL: the relay must accept mail from this "
                "server's address without signing in",
            )
        return
    if not client.has_extn("auth"):
        add(
            Level.FAIL,
            "COURSE_MAIL_URL has a user name, but the relay offers no AUTH on this connection",
            "relays offer AUTH only on an encrypted connection: use smtp+starttls:// (port "
            "587) or smtps:// (port 465); or remove user:password if the relay accepts this "
            "server by its address",
        )
        raise _Stop
    try:
        client.login(relay.username, relay.password or "")
    except smtplib.SMTPAuthenticationError as exc:
        add(
            Level.FAIL,
            f"the relay refused the user name and password ({exc.smtp_code} "
            f"{_reply_text(exc.smtp_error)})",
            "check the user name and password in COURSE_MAIL_URL (from your relay's account "
            "page; characters such as @ : / % in them must be percent-encoded, @ as %40)",
        )
        raise _Stop from None
    except smtplib.SMTPNotSupportedError:
        add(
            Level.FAIL,
            "the relay offers no AUTH method smtplib can use",
            "ask the relay's provider",
        )
        raise _Stop from None
    except smtplib.SMTPException as exc:
        add(
            Level.FAIL,
            f"signing in to the relay failed: {exc}",
            "check the user name and password in COURSE_MAIL_URL",
        )
        raise _Stop from None
    add(Level.OK, f"signed in to the relay as {relay.username}")


def _extensions(client: smtplib.SMTP, add: Callable[..., None]) -> None:
    if client.has_extn("size"):
        raw = client.esmtp_features.get("size", "").strip()
        limit = int(raw) if raw.isdigit() else 0
        if limit == 0:
            add(Level.OK, "the relay announces no limit on message size")
        elif limit < MIN_RELAY_SIZE:
            add(
                Level.WARN,
                f"the relay accepts messages only up to {limit:,} bytes",
                "ask the relay's provider for at least 1 MB (a lesson with its HTML part and "
                "a DKIM signature can come close to that)",
            )
        else:
            add(Level.OK, f"the relay accepts messages up to {limit / 1_000_000:.0f} MB")
    if client.has_extn("smtputf8"):
        add(Level.OK, "the relay supports SMTPUTF8 (addresses like josé@… can be written to)")
    else:
        add(
            Level.WARN,
            "the relay does not support SMTPUTF8: readers whose address has non-ASCII "
            "characters before the @ cannot be written to",
            "ask the relay's provider to enable SMTPUTF8 (Postfix: smtputf8_enable = yes); "
            "other readers are not affected",
        )


def _envelope(
    client: smtplib.SMTP, settings: Settings, recipient: str | None, add: Callable[..., None]
) -> None:
    from course.envelope import envelope_sender

    from_domain = domain_of(address_of(settings.mail_from))
    if not from_domain and not recipient:
        add(
            Level.WARN,
            "no test envelope: COURSE_MAIL_FROM has no address",
            "set COURSE_MAIL_FROM, e.g. Your Practice <course@yourpractice.example>",
        )
        return
    sender = envelope_sender(settings, 0 if settings.verp else None)
    target = recipient or f"postmaster@{from_domain}"
    code, reply = client.mail(sender)
    if code != 250:
        text = _reply_text(reply)
        if code == 530 or "auth" in text.lower():
            fix = "the relay wants this server to sign in: add user:password to COURSE_MAIL_URL"
        else:
            fix = (
                f"allow {sender} as a sender at the relay (providers make you verify the "
                "domain or the address first), or set COURSE_BOUNCE_ADDRESS to an address "
                "the relay accepts"
            )
        add(Level.FAIL, f"the relay refused the envelope sender <{sender}>: {code} {text}", fix)
        client.rset()
        return
    add(Level.OK, f"the relay accepts the envelope sender <{sender}>")
    code, reply = client.rcpt(target)
    text = _reply_text(reply)
    if code in (250, 251):
        add(Level.OK, f"the relay accepts mail for <{target}> (test envelope; nothing was sent)")
    elif 400 <= code < 500:
        add(
            Level.WARN,
            f"the relay deferred the recipient <{target}>: {code} {text}",
            "try again in a few minutes (greylisting or a rate limit); if it stays, ask the "
            "relay's provider",
        )
    else:
        fix = (
            "the relay must pass on mail from this server to any address: sign in "
            "(user:password in COURSE_MAIL_URL) or have its provider allow this server"
        )
        if recipient:
            fix += f"; or check the address given with --to ({recipient})"
        add(Level.FAIL, f"the relay refused the recipient <{target}>: {code} {text}", fix)
    client.rset()


# -- content ----------------------------------------------------------------------------------


def check_content_files(settings: Settings) -> list[Finding]:
    """Templates and every course in the database, rendered as the sender renders them
    (``course.checks``)."""
    from sqlalchemy.engine import make_url

    from course.checks import check_content
    from course.courses import CourseLibrary
    from course.db import make_engine, make_sessionmaker
    from course.render import Renderer
    from course.tokens import Signer

    update: dict[str, Any] = {"dkim_key_file": None}  # signing is the config check's
    if not settings.secret_keys:
        update["secret_key"] = SecretStr(secrets.token_hex(32))
    settings = settings.model_copy(update=update)
    renderer = Renderer(settings, Signer(settings.secret_keys))
    if not settings.database_url:
        return [
            Finding(
                "content",
                Level.WARN,
                "no database: the courses were not checked",
                "set COURSE_DATABASE_URL (see the configuration check above)",
            )
        ]
    url = make_url(settings.database_url)
    file = url.database if url.database not in (None, "", ":memory:") else None
    if url.get_backend_name() == "sqlite" and file and not Path(file).is_file():
        # Opening it would create an empty file: the database check above names it.
        return [
            Finding(
                "content",
                Level.WARN,
                "no database file: the courses were not checked",
                f"{UPGRADE_FIX}, then check again",
            )
        ]
    engine = make_engine(settings.database_url)
    try:
        courses = CourseLibrary(make_sessionmaker(engine)).current()
    except Exception as exc:
        return [
            Finding(
                "content",
                Level.WARN,
                f"the courses could not be read from the database: {exc}",
                "see the database check above",
            )
        ]
    finally:
        engine.dispose()
    report = check_content(renderer, courses, datetime.now(UTC))
    out = [
        Finding(
            "content",
            Level.FAIL,
            problem,
            "correct it in the admin's course editor (or the course folder, then `course "
            "courses import`); `course lessons check --course SLUG` checks again",
        )
        for problem in report.problems
    ]
    if not report.problems:
        live = [c for c in courses if c.version_id is not None]
        out.append(
            Finding(
                "content",
                Level.OK,
                f"{len(live)} course(s), {sum(c.content.total for c in live)} lessons and "
                "their emails render",
            )
        )
    return out


# -- DNS --------------------------------------------------------------------------------------


class LookupFailed(Exception):
    """A DNS question got no usable answer (not even "no such record")."""


class _Lookup:
    """DNS questions through one resolver. After a timeout (the resolver is unreachable),
    every further question fails at once instead of waiting again."""

    def __init__(self, resolver: dns.resolver.Resolver, timeout: float) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.outage: str | None = None

    def query(self, name: str, rtype: str) -> list[Any]:
        """The records of ``rtype`` at ``name``; empty when there are none."""
        if self.outage:
            raise LookupFailed(self.outage)
        try:
            qname = dns.name.from_text(name)
            answer = self.resolver.resolve(qname, rtype, raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            self.outage = f"the DNS server did not answer within {self.timeout:g} s"
            raise LookupFailed(self.outage) from None
        except dns.resolver.NoNameservers as exc:
            errors = exc.kwargs.get("errors") or []
            if errors and all(
                len(e) > 3 and isinstance(e[3], OSError | dns.exception.Timeout) for e in errors
            ):
                self.outage = f"the DNS server cannot be reached ({errors[0][3]})"
                raise LookupFailed(self.outage) from None
            raise LookupFailed(
                f"the DNS servers answered the question for {name} ({rtype}) with an error "
                "(SERVFAIL or REFUSED)"
            ) from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise LookupFailed(f"{name} ({rtype}): {exc}") from None
        return list(answer.rrset) if answer.rrset is not None else []

    def txt(self, name: str) -> list[str]:
        """Each TXT record at ``name``, its strings joined."""
        return [
            b"".join(record.strings).decode("utf-8", "replace")
            for record in self.query(name, "TXT")
        ]


def _resolver(nameserver: str | None, port: int, timeout: float) -> dns.resolver.Resolver:
    if nameserver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [nameserver]
    else:
        resolver = dns.resolver.Resolver()
    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.use_edns(0, 0, 1232)  # a 2048-bit DKIM key fits in one UDP answer
    return resolver


def check_dns(
    settings: Settings, *, nameserver: str | None = None, port: int = 53, timeout: float = 5.0
) -> list[Finding]:
    """SPF, DKIM, DMARC and MX for the From and bounce domains, and their alignment."""
    out: list[Finding] = []
    from_address = address_of(settings.mail_from)
    from_domain = domain_of(from_address)
    if not from_domain:
        return [
            Finding(
                "dns",
                Level.WARN,
                "not checked: COURSE_MAIL_FROM has no address",
                "set COURSE_MAIL_FROM, e.g. Your Practice <course@yourpractice.example>",
            )
        ]
    if not _public_domain(from_domain):
        return [
            Finding(
                "dns",
                Level.WARN,
                f"not checked: the From domain {from_domain} is not a public domain name",
                "set COURSE_MAIL_FROM to an address at your practice's own domain",
            )
        ]
    bounce_domain = domain_of(address_of(settings.bounce_address)) or from_domain
    try:
        lookup = _Lookup(_resolver(nameserver, port, timeout), timeout)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"cannot ask DNS: {exc}",
                "check this machine's DNS settings (/etc/resolv.conf), or name a DNS server "
                "with --nameserver 1.1.1.1",
            )
        ]
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        (f"SPF of {from_domain}", lambda: _spf(lookup, from_domain)),
    ]
    if bounce_domain != from_domain:
        checks.append((f"SPF of {bounce_domain}", lambda: _spf(lookup, bounce_domain)))
    checks += [
        ("DKIM", lambda: _dkim(lookup, settings, from_domain)),
        (f"DMARC of {from_domain}", lambda: _dmarc(lookup, from_domain)),
        (f"MX of {bounce_domain}", lambda: _mx(lookup, bounce_domain, "bounces")),
    ]
    if bounce_domain != from_domain and not settings.reply_to:
        checks.append((f"MX of {from_domain}", lambda: _mx(lookup, from_domain, "replies")))
    for label, check in checks:
        try:
            out.extend(check())
        except LookupFailed as exc:
            if lookup.outage:
                out.append(
                    Finding(
                        "dns",
                        Level.FAIL,
                        f"DNS could not be checked ({label} and the rest): {exc}",
                        "check this machine's DNS settings (/etc/resolv.conf) and network, or "
                        "name a DNS server with --nameserver 1.1.1.1",
                    )
                )
                break
            out.append(
                Finding(
                    "dns",
                    Level.FAIL,
                    f"could not check the {label}: {exc}",
                    "ask your DNS provider why the domain's name servers answer with an error "
                    "(mail providers see the same)",
                )
            )
    out.extend(_alignment(settings, from_domain, bounce_domain))
    return out


def _spf_records(texts: list[str]) -> list[str]:
    return [t.strip() for t in texts if re.match(r"v=spf1(\s|$)", t.strip(), re.IGNORECASE)]


_LOOKUP_TERMS = re.compile(r"^(include:|a$|a:|a/|mx$|mx:|mx/|ptr$|ptr:|exists:|redirect=)")


def _spf(lookup: _Lookup, domain: str) -> list[Finding]:
    records = _spf_records(lookup.txt(domain))
    if not records:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"no SPF record at {domain}: receivers cannot tell which servers may send its mail",
                f"publish one TXT record at {domain}: \"v=spf1 include:<your relay's SPF "
                "domain> -all\" (your relay's documentation names the include)",
            )
        ]
    if len(records) > 1:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"{len(records)} SPF records at {domain}: RFC 7208 makes more than one a "
                "permanent error, so SPF fails for every message",
                f'merge them into one TXT record at {domain}: "{_merge_spf(records)}", and '
                "delete the others",
            )
        ]
    record = records[0]
    terms = [t.lower() for t in record.split()[1:]]
    all_term = next((t for t in terms if t.lstrip("+-~?") == "all"), None)
    out: list[Finding] = []
    if all_term is None and not any(t.startswith("redirect=") for t in terms):
        out.append(
            Finding(
                "dns",
                Level.WARN,
                f'the SPF record at {domain} does not end with "-all" or "~all": mail from '
                f"any other server is treated as neutral ({record})",
                'add "-all" at the end (or "~all" while you are testing)',
            )
        )
    elif all_term in ("+all", "all"):
        out.append(
            Finding(
                "dns",
                Level.WARN,
                f"the SPF record at {domain} ends with +all: it allows every server on the "
                f"internet to send as {domain} ({record})",
                'end it with "-all" (or "~all" while you are testing)',
            )
        )
    elif all_term == "?all":
        out.append(
            Finding(
                "dns",
                Level.WARN,
                f"the SPF record at {domain} ends with ?all: it says nothing about servers "
                f"not listed ({record})",
                'end it with "-all" (or "~all" while you are testing)',
            )
        )
    else:
        out.append(Finding("dns", Level.OK, f"SPF at {domain}: {record}"))
    count, missing = _spf_lookups(lookup, record, seen={domain})
    if count > SPF_MAX_LOOKUPS:
        out.append(
            Finding(
                "dns",
                Level.WARN,
                f"the SPF record at {domain} needs {count} DNS lookups; receivers stop at "
                f"{SPF_MAX_LOOKUPS}, and then SPF fails",
                "remove includes of services you no longer use, or replace a/mx terms with "
                "ip4:/ip6: addresses",
            )
        )
    for target in missing:
        out.append(
            Finding(
                "dns",
                Level.FAIL,
                f"the SPF record at {domain} includes {target}, which has no SPF record: SPF "
                "fails with a permanent error",
                f"correct or remove include:{target}",
            )
        )
    return out


def _merge_spf(records: list[str]) -> str:
    """One SPF record with the terms of several (for the fix of duplicate records)."""
    terms: list[str] = []
    ending = None
    for record in records:
        for term in record.split()[1:]:
            if term.lower().lstrip("+-~?") == "all":
                ending = ending or term
            elif term not in terms:
                terms.append(term)
    return " ".join(["v=spf1", *terms, ending or "~all"])


def _spf_lookups(
    lookup: _Lookup, record: str, seen: set[str], depth: int = 0
) -> tuple[int, list[str]]:
    """DNS lookups an SPF check of ``record`` causes (RFC 7208 4.6.4), following include
    and redirect; and the included domains that have no SPF record."""
    count = 0
    missing: list[str] = []
    for term in record.split()[1:]:
        term = term.lower().lstrip("+-~?")
        if not _LOOKUP_TERMS.match(term):
            continue
        count += 1
        if not term.startswith(("include:", "redirect=")) or depth >= 5:
            continue
        target = term.split(":", 1)[1] if term.startswith("include:") else term.split("=", 1)[1]
        if "%" in target or target in seen or count > SPF_MAX_LOOKUPS:
            continue  # a macro cannot be followed here
        seen.add(target)
        records = _spf_records(lookup.txt(target))
        if len(records) != 1:
            missing.append(target)
            continue
        more, gone = _spf_lookups(lookup, records[0], seen, depth + 1)
        count += more
        missing.extend(gone)
    return count, missing


def _tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` tags (DKIM, DMARC), keys lower case, whitespace removed from values."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), "".join(value.split()))
    return tags


def _dkim(lookup: _Lookup, settings: Settings, from_domain: str) -> list[Finding]:
    from course.dkim import DkimError, dns_record, public_key_b64

    if settings.dkim_key_file is None:
        return [
            Finding(
                "dns",
                Level.WARN,
                "the app does not sign; make sure your relay signs with DKIM for your From "
                "domain (aligned d=)",
                f"in your relay's settings, set up DKIM for {from_domain} and publish the "
                "records it gives you (the doctor cannot see the relay's key); or let the app "
                "sign: `course dkim keygen /etc/course/dkim.pem`, then set COURSE_DKIM_KEY_FILE",
            )
        ]
    try:
        pem = settings.dkim_key_file.read_bytes()
        expected = public_key_b64(pem)
    except (OSError, DkimError):
        return []  # the configuration check reports the key file
    domain = (settings.dkim_domain or from_domain).lower().rstrip(".")
    name, value = dns_record(settings.dkim_selector, domain, pem)
    publish = f"publish this TXT record:\nname:  {name}\nvalue: {value}"
    texts = lookup.txt(name)
    keys = [_tags(t).get("p") for t in texts]
    if not texts:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"no DKIM record at {name}: receivers cannot check the app's signature",
                publish,
            )
        ]
    if expected in keys and len(texts) == 1:
        return [Finding("dns", Level.OK, f"the DKIM record at {name} matches COURSE_DKIM_KEY_FILE")]
    if expected in keys:
        return [
            Finding(
                "dns",
                Level.WARN,
                f"{len(texts)} TXT records at {name}: receivers may take the wrong one",
                "keep only this one:\n" + f"name:  {name}\nvalue: {value}",
            )
        ]
    if "" in keys:
        what = f"the DKIM record at {name} is revoked (empty p=): every signature fails"
    else:
        what = (
            f"the DKIM record at {name} has a different public key than "
            "COURSE_DKIM_KEY_FILE: every signature fails"
        )
    return [Finding("dns", Level.FAIL, what, "replace it; " + publish)]


def _dmarc(lookup: _Lookup, from_domain: str) -> list[Finding]:
    candidates = [from_domain]
    org = organisational_domain(from_domain)
    if org != from_domain:
        candidates.append(org)
    records: list[str] = []
    name = ""
    for domain in candidates:
        name = f"_dmarc.{domain}"
        records = [
            t.strip() for t in lookup.txt(name) if re.match(r"v\s*=\s*DMARC1\b", t.strip(), re.I)
        ]
        if records:
            break
    if not records:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"no DMARC record at _dmarc.{from_domain}: Gmail and Yahoo require one from "
                "senders of bulk mail",
                f'publish a TXT record at _dmarc.{from_domain}: "v=DMARC1; p=none; '
                f'rua=mailto:dmarc-reports@{from_domain}" (p=none only asks for reports; '
                "move to p=quarantine once they show that all your mail passes)",
            )
        ]
    if len(records) > 1:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"{len(records)} DMARC records at {name}: receivers ignore all of them",
                "keep one and delete the others",
            )
        ]
    tags = _tags(records[0])
    inherited = name != f"_dmarc.{from_domain}"
    policy = tags.get("p", "").lower()
    if inherited and tags.get("sp"):
        policy = tags["sp"].lower()
    where = name + (
        f" (the organisational domain's, which covers {from_domain})" if inherited else ""
    )
    out: list[Finding] = []
    if policy not in ("none", "quarantine", "reject"):
        out.append(
            Finding(
                "dns",
                Level.FAIL,
                f"the DMARC record at {where} has no valid policy (p=): {records[0]}",
                'start it with "v=DMARC1; p=none;" (or quarantine or reject)',
            )
        )
    elif policy == "none":
        out.append(
            Finding(
                "dns",
                Level.OK,
                f"DMARC at {where}: p=none, the minimum Gmail and Yahoo accept (it asks for "
                "reports only; p=quarantine protects your domain once they show all mail passes)",
            )
        )
    else:
        out.append(Finding("dns", Level.OK, f"DMARC at {where}: p={policy}"))
    if tags.get("rua"):
        out.append(Finding("dns", Level.OK, f"DMARC reports go to {tags['rua']}"))
    else:
        out.append(
            Finding(
                "dns",
                Level.WARN,
                f"the DMARC record at {name} has no rua=: nobody gets the reports that show "
                f"who sends mail as {from_domain} and whether it passes",
                f'add "rua=mailto:dmarc-reports@{from_domain}" (a mailbox you read, or a DMARC '
                "report service's address)",
            )
        )
    return out


def _mx(lookup: _Lookup, domain: str, role: str) -> list[Finding]:
    records = lookup.query(domain, "MX")
    if len(records) == 1 and records[0].exchange == dns.name.root:
        return [
            Finding(
                "dns",
                Level.FAIL,
                f"{domain} has a null MX (it accepts no mail): {role} cannot arrive",
                f"publish a real MX record for {domain} (your mailbox provider gives it)",
            )
        ]
    if records:
        hosts = ", ".join(
            r.exchange.to_text(omit_final_dot=True)
            for r in sorted(records, key=lambda r: r.preference)
        )
        return [Finding("dns", Level.OK, f"{domain} receives mail ({role}): MX {hosts}")]
    addresses = lookup.query(domain, "A") + lookup.query(domain, "AAAA")
    if addresses:
        return [
            Finding(
                "dns",
                Level.WARN,
                f"{domain} has no MX record, only an address ({addresses[0]}): {role} go to "
                "that machine, which must accept mail",
                f"publish an MX record for {domain} pointing at the server that receives "
                f"your {role}",
            )
        ]
    return [
        Finding(
            "dns",
            Level.FAIL,
            f"{domain} has no MX and no A/AAAA record: {role} cannot arrive",
            f"publish an MX record for {domain} (your mailbox provider gives it, e.g. "
            f'"{domain}. MX 10 mx.yourprovider.example."), or use an address at a domain '
            "that receives mail",
        )
    ]


def _alignment(settings: Settings, from_domain: str, bounce_domain: str) -> list[Finding]:
    """DMARC passes only for a DKIM or SPF domain that aligns with the From domain."""
    out: list[Finding] = []
    if settings.dkim_key_file is not None:
        signing = (settings.dkim_domain or from_domain).lower().rstrip(".")
        if aligned(signing, from_domain):
            out.append(Finding("dns", Level.OK, f"DKIM d={signing} aligns with the From domain"))
        else:
            out.append(
                Finding(
                    "dns",
                    Level.WARN,
                    f"DKIM d={signing} does not align with the From domain {from_domain}: "
                    "DMARC cannot pass by the app's signature",
                    f"set COURSE_DKIM_DOMAIN to {from_domain} (or leave it unset) and publish "
                    "the key there",
                )
            )
    if aligned(bounce_domain, from_domain):
        out.append(
            Finding(
                "dns",
                Level.OK,
                f"the bounce domain {bounce_domain} aligns with the From domain (SPF counts "
                "for DMARC)",
            )
        )
    else:
        out.append(
            Finding(
                "dns",
                Level.WARN,
                f"the bounce domain {bounce_domain} does not align with the From domain "
                f"{from_domain}: SPF passes for {bounce_domain} but does not count for DMARC, "
                "which then rests on DKIM alone",
                f"use a bounce address at {from_domain} or a subdomain of it (e.g. "
                f"COURSE_BOUNCE_ADDRESS=bounces@{from_domain})",
            )
        )
    return out
