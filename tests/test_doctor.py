"""``course doctor`` against real parts: a DNS server and an SMTP relay on loopback, a
migrated SQLite database, lesson files on disk."""

from __future__ import annotations

import ipaddress
import socket
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from course import doctor as doctor_module
from course.config import Settings
from course.db import alembic_config, upgrade
from course.dkim import dns_record, generate_key, public_key_b64
from course.doctor import Finding, Level, run_checks
from course.doctor_cli import doctor_command, parse_nameserver
from course.runtime import CourseState
from tests.conftest import engine_settings, publish_a_broken_lesson
from tests.dnsserver import LoopbackDNS, Zone

DOMAIN = "harbor.example.org"
DKIM_NAME = f"course._domainkey.{DOMAIN}"
USER, PASSWORD = "course", "s3cret-pass"


# -- a relay with AUTH ------------------------------------------------------------------------


class RelayHandler:
    """Records every envelope step; wants AUTH before MAIL (unless told otherwise)."""

    def __init__(self) -> None:
        self.mail_from: list[str] = []
        self.rcpt_to: list[str] = []
        self.data = 0
        self.reject_rcpt: dict[str, str] = {}

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        self.mail_from.append(address)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.reject_rcpt.get(address)
        if reply:
            return reply
        self.rcpt_to.append(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.data += 1
        return "250 Message accepted"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Relay:
    port: int
    handler: RelayHandler


@pytest.fixture
def start_relay() -> Iterator[Callable[..., Relay]]:
    """Starts aiosmtpd relays on loopback (AUTH over plain SMTP: loopback only)."""
    controllers: list[Controller] = []

    def start(**options: Any) -> Relay:
        handler = RelayHandler()
        port = free_port()
        settings: dict[str, Any] = {
            "authenticator": authenticator,
            "auth_require_tls": False,
            "enable_SMTPUTF8": True,
        }
        settings.update(options)
        controller = Controller(handler, hostname="127.0.0.1", port=port, **settings)
        controller.start()
        controllers.append(controller)
        return Relay(port, handler)

    yield start
    for controller in controllers:
        controller.stop()


# -- a DNS server with the practice's records -------------------------------------------------


@pytest.fixture(scope="module")
def pem() -> bytes:
    return generate_key()


def publish_good_records(zone: Zone, pem: bytes) -> None:
    """What a well set-up practice publishes (the relay's SPF include included)."""
    zone.add(DOMAIN, "TXT", "v=spf1 include:_spf.relay.example.net -all")
    zone.add(DOMAIN, "TXT", "google-site-verification=abc123")  # other TXT records are fine
    zone.add("_spf.relay.example.net", "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
    zone.add(DKIM_NAME, "TXT", dns_record("course", DOMAIN, pem)[1])
    zone.add(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}")
    zone.add(DOMAIN, "MX", f"10 mx1.{DOMAIN}", f"20 mx2.{DOMAIN}")
    zone.add(DOMAIN, "A", "192.0.2.1")
    zone.add(f"mx1.{DOMAIN}", "A", "192.0.2.10")


@pytest.fixture
def dns_server(pem: bytes) -> Iterator[LoopbackDNS]:
    server = LoopbackDNS()
    publish_good_records(server.zone, pem)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the practice's setup ---------------------------------------------------------------------


@dataclass
class Practice:
    """A practice's configuration around the real relay, DNS server and database."""

    tmp_path: Path
    db_url: str
    dns: LoopbackDNS
    relay: Relay
    key_file: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def zone(self) -> Zone:
        return self.dns.zone

    def settings(self, **overrides: Any) -> Settings:
        config: dict[str, Any] = {
            "MAIL_URL": f"smtp://{USER}:{PASSWORD}@127.0.0.1:{self.relay.port}?timeout=5",
            "EHLO_NAME": f"course.{DOMAIN}",
            "REPLY_TO": f"Harbor Therapy <hello@{DOMAIN}>",
            "BOUNCE_ADDRESS": f"bounces@{DOMAIN}",
            "BOUNCE_MAILBOX_URL": f"imaps://bounces:pw@imap.{DOMAIN}/INBOX",
            "DKIM_KEY_FILE": str(self.key_file),
        }
        config.update(self.overrides)
        config.update(overrides)
        return engine_settings(self.tmp_path, self.db_url, **config)

    def run(self, *args: str, **overrides: Any) -> Result:
        """``course doctor ARGS`` with these settings, asking the loopback DNS server."""
        state = CourseState.build(self.settings(**overrides))
        try:
            return CliRunner().invoke(
                doctor_command,
                ["--nameserver", f"127.0.0.1:{self.dns.port}", "--timeout", "3", *args],
                obj=state,
            )
        finally:
            state.close()


@pytest.fixture
def practice(
    tmp_path: Path,
    sqlite_url: str,
    dns_server: LoopbackDNS,
    start_relay: Callable[..., Relay],
    pem: bytes,
) -> Practice:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)
    return Practice(tmp_path, sqlite_url, dns_server, start_relay(), key_file)


def lines(result: Result, label: str) -> list[str]:
    """The findings printed with ``label`` (OK, WARNING, PROBLEM), without the label."""
    found = []
    for line in result.output.splitlines():
        text = line.strip()
        if text.startswith(label + " "):
            found.append(text[len(label) :].strip())
    return found


def fix_after(result: Result, text: str) -> str:
    """The Fix printed under the first finding containing ``text`` (with its continuation
    lines)."""
    output = result.output.splitlines()
    start = next(i for i, line in enumerate(output) if text in line)
    fix: list[str] = []
    for line in output[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith(("OK ", "WARNING ", "PROBLEM ")) or not line.startswith(" "):
            break
        fix.append(stripped)
    assert fix and fix[0].startswith("Fix: "), result.output
    return "\n".join(fix)


def has(found: list[str], text: str) -> bool:
    return any(text in line for line in found)


# -- everything in order ----------------------------------------------------------------------


def test_a_good_setup_is_all_ok_and_sends_nothing(practice: Practice, pem: bytes) -> None:
    result = practice.run()
    assert result.exit_code == 0, result.output
    assert lines(result, "WARNING") == [], result.output
    assert lines(result, "PROBLEM") == [], result.output
    assert "Fix:" not in result.output
    ok = lines(result, "OK")
    for expected in (
        "every required setting is set",
        "the app signs with DKIM",
        "migrations are up to date",
        f"connected to the relay at 127.0.0.1:{practice.relay.port}",
        f"signed in to the relay as {USER}",
        "the relay accepts messages up to 34 MB",
        "the relay supports SMTPUTF8",
        f"the relay accepts the envelope sender <bounces@{DOMAIN}>",
        f"the relay accepts mail for <postmaster@{DOMAIN}>",
        "1 course(s), 5 lessons and their emails render",
        f"SPF at {DOMAIN}: v=spf1 include:_spf.relay.example.net -all",
        f"the DKIM record at {DKIM_NAME} matches COURSE_DKIM_KEY_FILE",
        f"DMARC at _dmarc.{DOMAIN}: p=none, the minimum",
        f"DMARC reports go to mailto:dmarc@{DOMAIN}",
        f"{DOMAIN} receives mail (bounces): MX mx1.{DOMAIN}, mx2.{DOMAIN}",
        f"DKIM d={DOMAIN} aligns",
        f"the bounce domain {DOMAIN} aligns",
    ):
        assert has(ok, expected), f"{expected!r} missing from:\n{result.output}"
    for title in ("Configuration", "Database", "SMTP relay", "Templates and lessons", "DNS"):
        assert any(line.startswith(title) for line in result.output.splitlines())
    # A test envelope only: MAIL FROM and RCPT TO reached the relay, no DATA.
    assert practice.relay.handler.mail_from == [f"bounces@{DOMAIN}"]
    assert practice.relay.handler.rcpt_to == [f"postmaster@{DOMAIN}"]
    assert practice.relay.handler.data == 0


def test_to_names_the_test_envelope_recipient(practice: Practice) -> None:
    result = practice.run("--to", "reader@example.net")
    assert result.exit_code == 0, result.output
    assert practice.relay.handler.rcpt_to == ["reader@example.net"]
    assert practice.relay.handler.data == 0


def test_no_smtp_and_no_dns_leave_the_relay_and_dns_alone(practice: Practice) -> None:
    result = practice.run("--no-smtp", "--no-dns")
    assert result.exit_code == 0, result.output
    assert "SMTP relay" not in result.output and "DNS" not in result.output
    assert practice.relay.handler.mail_from == []
    assert practice.dns.questions == []


# -- DNS problems -----------------------------------------------------------------------------


def _spf(zone: Zone, *records: str) -> None:
    zone.set(DOMAIN, "TXT", "google-site-verification=abc123", *records)


def _dmarc_at_the_organisational_domain(zone: Zone) -> None:
    zone.remove(f"_dmarc.{DOMAIN}")
    zone.add("_dmarc.example.org", "TXT", "v=DMARC1; p=quarantine; rua=mailto:d@example.org")


def _a_bounce_domain_elsewhere(zone: Zone) -> None:
    zone.add("mailer.example.net", "TXT", "v=spf1 include:_spf.relay.example.net -all")
    zone.add("mailer.example.net", "MX", "10 mx.mailer.example.net")


DNS_CASES: list[tuple[str, dict[str, Any], Callable[[Zone], None], str, str, int]] = [
    ("no SPF", {}, lambda z: _spf(z), "PROBLEM", f"no SPF record at {DOMAIN}", 1),
    (
        "two SPF records",
        {},
        lambda z: _spf(z, "v=spf1 include:_spf.relay.example.net -all", "v=spf1 mx ~all"),
        "PROBLEM",
        f"2 SPF records at {DOMAIN}",
        1,
    ),
    (
        "+all",
        {},
        lambda z: _spf(z, "v=spf1 include:_spf.relay.example.net +all"),
        "WARNING",
        f"the SPF record at {DOMAIN} ends with +all",
        0,
    ),
    (
        "?all",
        {},
        lambda z: _spf(z, "v=spf1 include:_spf.relay.example.net ?all"),
        "WARNING",
        "ends with ?all",
        0,
    ),
    (
        "too many lookups",
        {},
        lambda z: _spf(
            z,
            "v=spf1 include:_spf.relay.example.net "
            + " ".join(f"a:h{i}.{DOMAIN}" for i in range(10))
            + " -all",
        ),
        "WARNING",
        "needs 11 DNS lookups",
        0,
    ),
    (
        "an include without SPF",
        {},
        lambda z: _spf(z, "v=spf1 include:_spf.gone.example.net -all"),
        "PROBLEM",
        "includes _spf.gone.example.net, which has no SPF record",
        1,
    ),
    (
        "no DKIM record",
        {},
        lambda z: z.remove(DKIM_NAME),
        "PROBLEM",
        f"no DKIM record at {DKIM_NAME}",
        1,
    ),
    (
        "a revoked DKIM record",
        {},
        lambda z: z.set(DKIM_NAME, "TXT", "v=DKIM1; k=rsa; p="),
        "PROBLEM",
        "is revoked",
        1,
    ),
    (
        "no DKIM key file: the relay must sign",
        {"DKIM_KEY_FILE": None},
        lambda z: None,
        "WARNING",
        "the app does not sign; make sure your relay signs with DKIM for your From domain "
        "(aligned d=)",
        0,
    ),
    (
        "a DKIM domain that does not align",
        {"DKIM_DOMAIN": "mailer.example.net"},
        lambda z: z.add("course._domainkey.mailer.example.net", "TXT", *z.values(DKIM_NAME, "TXT")),
        "WARNING",
        f"DKIM d=mailer.example.net does not align with the From domain {DOMAIN}",
        0,
    ),
    (
        "no DMARC",
        {},
        lambda z: z.remove(f"_dmarc.{DOMAIN}"),
        "PROBLEM",
        f"no DMARC record at _dmarc.{DOMAIN}: Gmail and Yahoo require one",
        1,
    ),
    (
        "two DMARC records",
        {},
        lambda z: z.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject"),
        "PROBLEM",
        f"2 DMARC records at _dmarc.{DOMAIN}",
        1,
    ),
    (
        "DMARC at the organisational domain",
        {},
        _dmarc_at_the_organisational_domain,
        "OK",
        f"DMARC at _dmarc.example.org (the organisational domain's, which covers {DOMAIN}): "
        "p=quarantine",
        0,
    ),
    (
        "DMARC without reports",
        {},
        lambda z: z.set(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject"),
        "WARNING",
        "has no rua=",
        0,
    ),
    (
        "only an A record for the bounce domain",
        {},
        lambda z: z.set(DOMAIN, "MX"),
        "WARNING",
        f"{DOMAIN} has no MX record, only an address (192.0.2.1)",
        0,
    ),
    (
        "no MX and no A for the bounce domain",
        {"BOUNCE_ADDRESS": f"bounces@return.{DOMAIN}"},
        lambda z: z.add(f"return.{DOMAIN}", "TXT", "v=spf1 include:_spf.relay.example.net -all"),
        "PROBLEM",
        f"return.{DOMAIN} has no MX and no A/AAAA record: bounces cannot arrive",
        1,
    ),
    (
        "a bounce domain that does not align",
        {"BOUNCE_ADDRESS": "bounces@mailer.example.net"},
        _a_bounce_domain_elsewhere,
        "WARNING",
        f"the bounce domain mailer.example.net does not align with the From domain {DOMAIN}",
        0,
    ),
]


@pytest.mark.parametrize(
    ("overrides", "change", "label", "text", "exit_code"),
    [case[1:] for case in DNS_CASES],
    ids=[case[0] for case in DNS_CASES],
)
def test_dns_problems_are_named(
    practice: Practice,
    overrides: dict[str, Any],
    change: Callable[[Zone], None],
    label: str,
    text: str,
    exit_code: int,
) -> None:
    change(practice.zone)
    result = practice.run(**overrides)
    assert has(lines(result, label), text), result.output
    assert result.exit_code == exit_code, result.output
    if label != "OK":
        assert fix_after(result, text)
    # Only this one thing is wrong.
    others = lines(result, "PROBLEM") + lines(result, "WARNING")
    assert [line for line in others if text not in line] == [], result.output


def test_two_spf_records_get_one_merged_record_as_the_fix(practice: Practice) -> None:
    _spf(practice.zone, "v=spf1 include:_spf.relay.example.net -all", "v=spf1 mx ~all")
    result = practice.run()
    fix = fix_after(result, "2 SPF records")
    assert '"v=spf1 include:_spf.relay.example.net mx -all"' in fix


def test_a_dkim_record_with_another_key_prints_the_right_record(
    practice: Practice, pem: bytes
) -> None:
    other = generate_key(1024)
    practice.zone.set(DKIM_NAME, "TXT", dns_record("course", DOMAIN, other)[1])
    result = practice.run()
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), f"the DKIM record at {DKIM_NAME} has a different public")
    fix = fix_after(result, "has a different public key")
    assert f"name:  {DKIM_NAME}" in fix
    assert f"value: v=DKIM1; k=rsa; p={public_key_b64(pem)}" in fix
    assert public_key_b64(other) not in fix


def test_dns_that_does_not_answer_is_one_problem(practice: Practice) -> None:
    settings = practice.settings()
    started = time.monotonic()
    findings = run_checks(
        settings, nameserver="127.0.0.1", port=free_port(), smtp=False, timeout=1.0
    )
    assert time.monotonic() - started < 10
    dns = [f for f in findings if f.area == "dns" and f.level is Level.FAIL]
    assert len(dns) == 1, dns
    assert "DNS could not be checked" in dns[0].what and dns[0].fix
    # The other areas were checked all the same.
    assert any(f.area == "content" and f.level is Level.OK for f in findings)


# -- the relay --------------------------------------------------------------------------------


def test_a_relay_that_refuses_connections(practice: Practice) -> None:
    port = free_port()  # nothing listens there
    result = practice.run(MAIL_URL=f"smtp://{USER}:{PASSWORD}@127.0.0.1:{port}")
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), f"cannot connect to the relay at 127.0.0.1:{port}")
    assert "check the host and port in COURSE_MAIL_URL" in fix_after(result, "cannot connect")
    assert PASSWORD not in result.output
    # The other areas are still checked.
    assert has(lines(result, "OK"), f"SPF at {DOMAIN}")


def test_a_wrong_password(practice: Practice) -> None:
    result = practice.run(MAIL_URL=f"smtp://{USER}:wrong@127.0.0.1:{practice.relay.port}")
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), "the relay refused the user name and password (535")
    assert "percent-encoded" in fix_after(result, "refused the user name")
    assert practice.relay.handler.mail_from == []  # it stopped there


def test_a_relay_that_wants_a_sign_in(practice: Practice) -> None:
    result = practice.run(MAIL_URL=f"smtp://127.0.0.1:{practice.relay.port}")
    assert result.exit_code == 1, result.output
    assert has(
        lines(result, "PROBLEM"), f"the relay refused the envelope sender <bounces@{DOMAIN}>"
    )
    assert "sign in" in fix_after(result, "refused the envelope sender")


def test_a_relay_that_refuses_the_recipient(practice: Practice) -> None:
    practice.relay.handler.reject_rcpt[f"postmaster@{DOMAIN}"] = "554 5.7.1 Relay access denied"
    result = practice.run()
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), f"the relay refused the recipient <postmaster@{DOMAIN}>")


def test_starttls_asked_for_but_not_offered(practice: Practice) -> None:
    url = f"smtp+starttls://{USER}:{PASSWORD}@127.0.0.1:{practice.relay.port}"
    result = practice.run(MAIL_URL=url)
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), "asks for STARTTLS but the relay")


def test_a_small_size_limit_and_no_smtputf8_are_warnings(
    practice: Practice, start_relay: Callable[..., Relay]
) -> None:
    relay = start_relay(data_size_limit=500_000, enable_SMTPUTF8=False)
    result = practice.run(MAIL_URL=f"smtp://{USER}:{PASSWORD}@127.0.0.1:{relay.port}")
    assert result.exit_code == 0, result.output
    warnings = lines(result, "WARNING")
    assert has(warnings, "the relay accepts messages only up to 500,000 bytes")
    assert has(warnings, "the relay does not support SMTPUTF8")
    assert len(warnings) == 2, result.output


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def test_starttls_with_a_test_relay(
    practice: Practice, start_relay: Callable[..., Relay], tls_context: ssl.SSLContext
) -> None:
    relay = start_relay(tls_context=tls_context)
    url = f"smtp+starttls://{USER}:{PASSWORD}@127.0.0.1:{relay.port}?verify=false"
    result = practice.run(MAIL_URL=url)
    assert result.exit_code == 0, result.output
    assert has(lines(result, "OK"), "STARTTLS: the connection is encrypted (TLSv1")
    assert relay.handler.mail_from == [f"bounces@{DOMAIN}"]


def test_a_relay_certificate_that_is_not_trusted(
    practice: Practice, start_relay: Callable[..., Relay], tls_context: ssl.SSLContext
) -> None:
    relay = start_relay(tls_context=tls_context)
    url = f"smtp+starttls://{USER}:{PASSWORD}@127.0.0.1:{relay.port}"
    result = practice.run(MAIL_URL=url)
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), "has a certificate that is not valid")
    assert relay.handler.mail_from == []


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (a relay "elsewhere"), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


def test_plain_smtp_to_a_relay_elsewhere_that_offers_starttls(
    practice: Practice, tls_context: ssl.SSLContext
) -> None:
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no address outside loopback")
    handler = RelayHandler()
    port = free_port()
    controller = Controller(
        handler,
        hostname=address,
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
        enable_SMTPUTF8=True,
        tls_context=tls_context,
    )
    controller.start()
    try:
        result = practice.run(MAIL_URL=f"smtp://{USER}:{PASSWORD}@{address}:{port}")
    finally:
        controller.stop()
    assert result.exit_code == 0, result.output
    assert has(lines(result, "WARNING"), "which offers STARTTLS")
    assert "use smtp+starttls://" in fix_after(result, "which offers STARTTLS")


# -- database and content ---------------------------------------------------------------------


def test_a_database_that_was_never_migrated(practice: Practice, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    result = practice.run(DATABASE_URL=f"sqlite:///{path}")
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), "the database has no tables yet (never migrated)")
    assert fix_after(result, "never migrated") == "Fix: run `course db upgrade`"


def test_a_database_behind_the_code(practice: Practice, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    script = ScriptDirectory.from_config(alembic_config(url))
    first = script.get_bases()[0]
    upgrade(url, first)
    result = practice.run(DATABASE_URL=url)
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), f"the database is at revision {first}")
    assert "run `course db upgrade`" in fix_after(result, "the database is at revision")


def test_a_missing_sqlite_file_is_named_and_not_created(practice: Practice, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "course.db"
    settings = practice.settings(DATABASE_URL=f"sqlite:///{path}")
    findings = run_checks(settings, smtp=False, dns=False)
    database = [f for f in findings if f.area == "database"]
    assert [f.level for f in database] == [Level.FAIL]
    assert "does not exist" in database[0].what
    assert not path.exists() and not path.parent.exists()


def test_a_broken_lesson_in_the_published_course(practice: Practice) -> None:
    # Publishing refuses a broken lesson; a hand edit in the database does not.
    practice.run()  # creates the database with the first course
    publish_a_broken_lesson(practice.db_url)
    result = practice.run()
    assert result.exit_code == 1, result.output
    problems = lines(result, "PROBLEM")
    assert has(problems, "feeling-secure: lesson 2"), result.output
    assert "course lessons check" in fix_after(result, "feeling-secure: lesson 2")


# -- configuration ----------------------------------------------------------------------------


def test_missing_settings_are_problems_and_nothing_raises(tmp_path: Path) -> None:
    settings = Settings(lessons_dir=tmp_path / "no-lessons")
    findings = run_checks(settings, nameserver="127.0.0.1", port=free_port(), timeout=0.5)
    config = {f.what.split(" ")[0] for f in findings if f.level is Level.FAIL}
    assert {"COURSE_DATABASE_URL", "COURSE_MAIL_URL", "COURSE_SECRET_KEY"} <= config
    assert all(f.fix for f in findings if f.level is not Level.OK)
    content = [f for f in findings if f.area == "content"]
    assert content and content[0].level is Level.WARN and "not checked" in content[0].what


def test_a_configuration_that_does_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("COURSE_") and not name.startswith(("COURSE_TEST_", "COURSE_BENCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COURSE_SEND_HOUR", "99")
    result = CliRunner().invoke(doctor_command, ["--no-smtp", "--no-dns"])
    assert result.exit_code == 1, result.output
    assert has(lines(result, "PROBLEM"), "COURSE_SEND_HOUR")
    assert "nothing else was checked" in result.output


def test_a_check_that_breaks_is_a_problem_not_a_crash(
    practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings: Settings, **kwargs: Any) -> list[Finding]:
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor_module, "check_content_files", broken)
    findings = run_checks(practice.settings(), smtp=False, dns=False)
    content = [f for f in findings if f.area == "content"]
    assert content == [
        Finding(
            "content",
            Level.FAIL,
            "this check stopped with an error: RuntimeError: boom",
            "this is a bug in `course doctor`; please report it with this line",
        )
    ]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("1.1.1.1", ("1.1.1.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_nameserver_forms(value: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(value) == parsed


@pytest.mark.parametrize("value", ["dns.example", "1.1.1.1:0", "1.1.1.1:x", "[::1]x", ""])
def test_bad_nameservers_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(value)
    result = CliRunner().invoke(doctor_command, ["--nameserver", value])
    assert result.exit_code == 2
    assert "--nameserver" in result.output
