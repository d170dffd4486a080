"""Mail that reaches the inbox: headers, the envelope sender and VERP, EHLO, DKIM signatures
verified by dkimpy against the published record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from dns import exception as dns_exception
from dns import resolver as dns_resolver

from course.cli import main
from course.config import Settings
from course.dkim import dns_record, generate_key
from course.envelope import delivery_from_verp, envelope_sender, verp_tag
from course.mail import transport_from_url
from tests.conftest import FakeClock, RecordingHandler, engine_settings, make_sender
from tests.dnsserver import LoopbackDNS
from tests.helpers import parse
from tests.test_sending import enrol


class HeloHandler(RecordingHandler):
    """Also remembers the name each client gave in EHLO."""

    def __init__(self) -> None:
        super().__init__()
        self.helo_names: list[str] = []

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.helo_names.append(hostname)
        session.host_name = hostname
        return responses


@pytest.fixture
def relay(smtp_server: tuple[Controller, RecordingHandler]) -> Any:
    import socket

    handler = HeloHandler()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, handler
    controller.stop()


def _send_lesson_one(settings: Settings) -> None:
    clock = FakeClock()
    enrol(settings, clock, "ana@example.com")
    transport = transport_from_url(settings.mail_url, ehlo_name=settings.ehlo_name)
    result = make_sender(settings, transport, clock).tick()
    assert result.sent == 1


def test_headers_envelope_and_ehlo(tmp_path: Path, db_url: str, relay: Any) -> None:
    port, handler = relay
    settings = engine_settings(
        tmp_path,
        db_url,
        MAIL_URL=f"smtp://127.0.0.1:{port}",
        REPLY_TO="Harbor Therapy <hello@harbor.example.org>",
        BOUNCE_ADDRESS="bounces@harbor.example.org",
        EHLO_NAME="mail.harbor.example.org",
    )
    _send_lesson_one(settings)
    [received] = handler.messages
    message = parse(received.data)
    assert message["Reply-To"] == "Harbor Therapy <hello@harbor.example.org>"
    assert message["List-Id"] == '"Harbor Therapy" <course.harbor.example.org>'
    assert received.mail_from == "bounces@harbor.example.org"
    assert handler.helo_names == ["mail.harbor.example.org"]


def test_verp_gives_each_delivery_its_own_envelope_sender(
    tmp_path: Path, db_url: str, relay: Any
) -> None:
    port, handler = relay
    settings = engine_settings(
        tmp_path,
        db_url,
        MAIL_URL=f"smtp://127.0.0.1:{port}",
        BOUNCE_ADDRESS="bounces@harbor.example.org",
        VERP=True,
    )
    _send_lesson_one(settings)
    sender = handler.messages[0].mail_from
    assert sender.startswith("bounces+d") and sender.endswith("@harbor.example.org")
    delivery_id = delivery_from_verp(settings.secret_keys, sender)
    assert delivery_id is not None

    from course.models import Delivery
    from tests.conftest import sessions_for

    with sessions_for(settings.database_url)() as s:
        assert s.get(Delivery, delivery_id).number == 1  # type: ignore[union-attr]


def test_verp_tags_cannot_be_made_up(tmp_path: Path, sqlite_url: str) -> None:
    settings = engine_settings(tmp_path, sqlite_url, BOUNCE_ADDRESS="b@x.example", VERP=True)
    real = envelope_sender(settings, 42)
    assert delivery_from_verp(settings.secret_keys, real) == 42
    assert delivery_from_verp(settings.secret_keys, real.upper()) == 42  # case folded on the way
    forged = real.replace("d16.", "d17.")  # another delivery with the same hash
    assert delivery_from_verp(settings.secret_keys, forged) is None
    assert delivery_from_verp(settings.secret_keys, "b@x.example") is None
    assert delivery_from_verp(settings.secret_keys, "b+junk@x.example") is None
    # A tag made with a key that is now a fallback still works after a rotation.
    new = ("n" + "0123456789abcdef" * 3, *())
    assert delivery_from_verp((*settings.secret_keys, *new), real) == 42
    assert verp_tag(settings.secret_keys, 42) in real


def test_every_message_is_dkim_signed_and_verifies_against_the_published_record(
    tmp_path: Path, db_url: str, relay: Any
) -> None:
    port, handler = relay
    key = tmp_path / "dkim.pem"
    key.write_bytes(generate_key())
    settings = engine_settings(
        tmp_path,
        db_url,
        MAIL_URL=f"smtp://127.0.0.1:{port}",
        DKIM_KEY_FILE=str(key),
        DKIM_SELECTOR="s2026",
        REPLY_TO="hello@harbor.example.org",
    )
    _send_lesson_one(settings)
    data = handler.messages[0].data
    name, value = dns_record("s2026", "harbor.example.org", key.read_bytes())
    assert name == "s2026._domainkey.harbor.example.org"
    # The record published on a real DNS server on loopback, read by dkimpy's verifier.
    dns = LoopbackDNS().start()
    dns.zone.add(name, "TXT", value)
    resolver = dns_resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], dns.port

    def published(qname: bytes, timeout: int = 5) -> bytes:
        try:
            answer = resolver.resolve(qname.decode(), "TXT")
        except dns_exception.DNSException:
            return b""
        return b"".join(b"".join(r.strings) for r in answer)

    assert dkim.verify(data, dnsfunc=published)
    signature = parse(data)["DKIM-Signature"]
    for header in ("from", "subject", "list-unsubscribe", "reply-to", "list-id"):
        assert header in signature.split("h=", 1)[1].split(";", 1)[0]
    # A changed subject breaks it.
    tampered = data.replace(b"Subject: Day 1", b"Subject: Win 1", 1)
    assert not dkim.verify(tampered, dnsfunc=published)
    dns.stop()


def test_dkim_keygen_writes_a_private_key_and_prints_the_record(tmp_path: Path) -> None:
    key = tmp_path / "new.pem"
    env = {"COURSE_MAIL_FROM": "Harbor <course@harbor.example.org>"}
    result = CliRunner().invoke(main, ["dkim", "keygen", str(key), "--selector", "s1"], env=env)
    assert result.exit_code == 0, result.output
    assert key.stat().st_mode & 0o777 == 0o600
    name, value = dns_record("s1", "harbor.example.org", key.read_bytes())
    assert f'{name}  TXT  "{value}"' in result.output
    again = CliRunner().invoke(main, ["dkim", "keygen", str(key)], env=env)
    assert again.exit_code != 0 and "never overwritten" in again.output


def test_a_broken_dkim_key_stops_the_start_with_its_file_named(
    tmp_path: Path, sqlite_url: str
) -> None:
    from course.config import ConfigError, Need

    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    settings = engine_settings(tmp_path, sqlite_url, DKIM_KEY_FILE=str(bad))
    with pytest.raises(ConfigError, match=f"COURSE_DKIM_KEY_FILE \\({bad}\\) cannot be used"):
        settings.require(Need.MAIL)
    missing = engine_settings(tmp_path, sqlite_url, DKIM_KEY_FILE=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match="cannot read"):
        missing.require(Need.MAIL)
