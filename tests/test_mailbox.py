"""course.mail.mailbox against a real Dovecot on loopback (tests/mailserver.py): IMAP plain,
IMAP with STARTTLS and IMAPS; POP3 plain, POP3 with STLS and POP3S."""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from course.mail.mailbox import (
    ImapMailbox,
    MailboxError,
    MailboxSettings,
    _imap_utf7,
    open_mailbox,
)
from tests import mailserver
from tests.mailserver import Dovecot

#: The private Dovecot fixture, under the name the tests ask for.
dovecot = mailserver.dovecot

IMAP_MODES = ["imap-plain", "imap-starttls", "imaps"]
POP3_MODES = ["pop3-plain", "pop3-stls", "pop3s"]


def url(
    server: Dovecot, mode: str, path: str = "", password: str | None = None, **options: str
) -> str:
    """The mailbox URL of the test user in one of the modes above."""
    scheme, port, extra = {
        "imap-plain": ("imap", server.imap_port, {"plain": "true"}),
        "imap-starttls": ("imap", server.imap_port, {"verify": "false"}),
        "imaps": ("imaps", server.imaps_port, {"verify": "false"}),
        "pop3-plain": ("pop3", server.pop3_port, {"plain": "true"}),
        "pop3-stls": ("pop3", server.pop3_port, {"verify": "false"}),
        "pop3s": ("pop3s", server.pop3s_port, {"verify": "false"}),
    }[mode]
    extra.update(options)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in extra.items() if v is not None)
    secret = server.password if password is None else password
    credentials = f"{quote(server.user, safe='')}:{quote(secret, safe='')}"
    return f"{scheme}://{credentials}@127.0.0.1:{port}{path}?{query}"


def message(n: int, body: bytes = b"") -> bytes:
    return (
        f"From: mailer-daemon@example.test\r\n"
        f"To: bounces@example.test\r\n"
        f"Subject: Undelivered mail {n}\r\n"
        f"Message-ID: <bounce-{n}@example.test>\r\n"
        f"\r\n"
        f"Delivery to reader{n}@example.org failed.\r\n"
    ).encode() + body


def fill(server: Dovecot, count: int, folder: str = "INBOX") -> list[bytes]:
    raws = [message(n) for n in range(1, count + 1)]
    for raw in raws:
        server.deliver(raw, folder)
    return raws


def logins(server: Dovecot, count: int) -> list[str]:
    """Dovecot's log lines of the test user's logins (they end in TLS or secured)."""
    return server.log_lines("-login: Info: Login:", count=count)


def logouts(server: Dovecot, count: int) -> list[str]:
    """Dovecot's log lines of the test user's sessions ending, with their counters."""
    return server.log_lines("Info: Disconnected", f"({server.user})", count=count)


# -- the URL ---------------------------------------------------------------------------------


def test_url_defaults_per_scheme() -> None:
    for scheme, port in (("imaps", 993), ("imap", 143), ("pop3s", 995), ("pop3", 110)):
        s = MailboxSettings.from_url(f"{scheme}://bounces:secret@mail.example.org")
        assert (s.scheme, s.host, s.port, s.username, s.password) == (
            scheme,
            "mail.example.org",
            port,
            "bounces",
            "secret",
        )
        assert (s.folder, s.processed, s.kept, s.verify, s.timeout, s.plain) == (
            "INBOX",
            None,
            "course-kept",
            True,
            30.0,
            False,
        )


def test_url_percent_decoding_and_options() -> None:
    s = MailboxSettings.from_url(
        "imaps://bounces%40example.org:p%40ss%2Fw%3Ard%23%25@mail.example.org:1993/Bounces%20In"
        "?processed=Done&kept=Later&verify=false&timeout=2.5"
    )
    assert s.username == "bounces@example.org"
    assert s.password == "p@ss/w:rd#%"
    assert (s.port, s.folder, s.processed, s.kept) == (1993, "Bounces In", "Done", "Later")
    assert (s.verify, s.timeout) == (False, 2.5)
    assert "p@ss" not in repr(s)
    assert "p@ss" not in s.describe()


@pytest.mark.parametrize(
    ("bad_url", "complaint"),
    [
        ("http://u:secret-pw@mail.example.org", "must start with imaps"),
        ("mail.example.org", "must start with imaps"),
        ("imaps://u:secret-pw@", "no host"),
        ("imaps://mail.example.org", "needs a user name and a password"),
        ("imaps://u@mail.example.org", "needs a user name and a password"),
        ("imaps://u:secret-pw@mail.example.org:99999", "cannot be parsed"),
        ("imaps://u:secret-pw@mail.example.org:port", "cannot be parsed"),
        ("imaps://u:secret-pw@mail.example.org?procesed=Done", "unknown options procesed"),
        ("imaps://u:secret-pw@mail.example.org?timeout=soon", "timeout must be a number"),
        ("imaps://u:secret-pw@mail.example.org?timeout=0", "positive number of seconds"),
        ("imaps://u:secret-pw@mail.example.org?timeout=nan", "positive number of seconds"),
        ("imaps://u:secret-pw@mail.example.org?verify=maybe", "verify= must be true or false"),
        ("imaps://u:secret-pw@mail.example.org?kept=a&kept=b", "repeats options kept"),
        ("imaps://u:secret-pw@mail.example.org?processed=", "processed folder name is empty"),
        ("imaps://u:secret-pw@mail.example.org?processed=inbox", "must differ"),
        ("imaps://u:secret-pw@mail.example.org/Bounces?kept=Bounces", "must differ"),
        ("imaps://u:secret-pw@mail.example.org/a%0D%0Ab", "control characters"),
        ("imaps://u:secret-pw%0D%0A@mail.example.org", "control characters"),
        ("pop3s://u:secret-pw@mail.example.org/Bounces", "POP3 has no folders"),
        ("pop3s://u:secret-pw@mail.example.org?processed=Done", "POP3 has no folders"),
        ("pop3s://u:secret-pw@mail.example.org?kept=Later", "POP3 has no folders"),
        ("imaps://u:secret-pw@127.0.0.1?plain=true", "plain=true is for imap:// and pop3://"),
    ],
)
def test_bad_url_is_a_clear_value_error(bad_url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)) as raised:
        open_mailbox(bad_url)
    assert "secret-pw" not in str(raised.value)


@pytest.mark.parametrize("host", ["mail.example.org", "192.0.2.10", "127.0.0.2", "[2001:db8::1]"])
@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_plain_is_refused_for_a_host_that_is_not_loopback(scheme: str, host: str) -> None:
    with pytest.raises(ValueError, match="only allowed for a test server on loopback"):
        open_mailbox(f"{scheme}://u:pw@{host}:1143?plain=true")
    # Without plain=true the same URL is fine (STARTTLS will be required).
    assert MailboxSettings.from_url(f"{scheme}://u:pw@{host}:1143").plain is False


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "LOCALHOST"])
def test_plain_is_allowed_on_loopback(host: str) -> None:
    assert MailboxSettings.from_url(f"imap://u:pw@{host}:1143?plain=true").plain is True


def test_folder_names_are_modified_utf7() -> None:
    assert _imap_utf7("INBOX") == "INBOX"
    assert _imap_utf7("Traités") == "Trait&AOk-s"
    assert _imap_utf7("R&D") == "R&-D"
    assert _imap_utf7("日本語") == "&ZeVnLIqe-"


def test_nothing_listening_is_a_mailbox_error() -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for scheme in ("imap", "pop3"):
        box = open_mailbox(f"{scheme}://u:secret-pw@127.0.0.1:{port}?plain=true&timeout=5")
        with pytest.raises(MailboxError, match="cannot connect") as raised:
            box.__enter__()
        assert "secret-pw" not in str(raised.value)


@contextmanager
def scripted_server(
    greeting: bytes, answer: Callable[[bytes], bytes]
) -> Iterator[tuple[int, list[bytes]]]:
    """A loopback server for one connection that greets, answers each line it is sent with
    ``answer(line)``, and records the lines: a server without STARTTLS/STLS."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    received: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as lines:
            conn.settimeout(10)
            conn.sendall(greeting)
            try:
                for line in lines:
                    received.append(line)
                    conn.sendall(answer(line))
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        thread.join(timeout=10)
        listener.close()


def _imap_without_starttls(line: bytes) -> bytes:
    tag, _, command = line.strip().partition(b" ")
    if command.upper() == b"CAPABILITY":
        return b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
    return tag + b" BAD not here\r\n"


def _pop3_without_stls(line: bytes) -> bytes:
    if line.strip().upper() == b"CAPA":
        return b"+OK\r\nUSER\r\nUIDL\r\n.\r\n"
    return b"-ERR not here\r\n"


def test_imap_without_starttls_is_refused_before_the_password_is_sent() -> None:
    with scripted_server(b"* OK fake IMAP ready\r\n", _imap_without_starttls) as (port, got):
        with pytest.raises(MailboxError, match="does not offer STARTTLS"):
            with open_mailbox(f"imap://u:secret-pw@127.0.0.1:{port}?timeout=5"):
                pass
    assert got and not any(b"LOGIN" in line or b"secret-pw" in line for line in got)


def test_pop3_without_stls_is_refused_before_the_password_is_sent() -> None:
    with scripted_server(b"+OK fake POP3 ready\r\n", _pop3_without_stls) as (port, got):
        with pytest.raises(MailboxError, match="STLS") as raised:
            with open_mailbox(f"pop3://u:secret-pw@127.0.0.1:{port}?timeout=5"):
                pass
    assert "not supported" in str(raised.value)
    assert got and not any(b"USER" in line or b"secret-pw" in line for line in got)


# -- IMAP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", IMAP_MODES)
def test_imap_lists_messages_oldest_first_without_marking_them(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, mode)) as box:
        found = box.messages()
        assert [raw for _, raw in found] == raws
        ids = [message_id for message_id, _ in found]
        assert all(re.fullmatch(r"\d+:\d+", i) for i in ids)
        assert len(set(ids)) == 3
        assert box.messages(limit=2) == found[:2]
    with open_mailbox(url(dovecot, mode)) as box:
        assert box.messages() == found  # the same ids in a new session
    # Listing leaves the messages in place and unread (BODY.PEEK), for a person to see.
    assert dovecot.folder_messages("INBOX") == raws
    assert not any(
        re.search(r":2,[A-Z]*S", f.name)
        for f in (dovecot.maildir() / "cur").iterdir()
        if f.is_file()
    )


@pytest.mark.parametrize("mode", IMAP_MODES)
def test_imap_skipped_ids_are_not_downloaded(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 4)
    with open_mailbox(url(dovecot, mode)) as box:
        ids = [i for i, _ in box.messages()]
    with open_mailbox(url(dovecot, mode)) as box:
        found = box.messages(skip=frozenset({ids[0], ids[2]}))
        assert found == [(ids[1], raws[1]), (ids[3], raws[3])]
        assert box.messages(limit=1, skip={ids[0]}) == [(ids[1], raws[1])]
    # Dovecot counts the message bodies it sent in each session.
    counts = [re.search(r"body_count=(\d+)", line) for line in logouts(dovecot, 2)]
    assert [int(m.group(1)) for m in counts if m] == [4, 3]


@pytest.mark.parametrize("mode", IMAP_MODES)
def test_imap_processed_moves_to_the_processed_folder(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, mode, processed="Done")) as box:
        (first, _), (second, _), (third, _) = box.messages()
        box.processed(second)
        assert [i for i, _ in box.messages()] == [first, third]  # never returned again
        box.processed(first)
        assert [i for i, _ in box.messages()] == [third]
    with open_mailbox(url(dovecot, mode, processed="Done")) as box:
        assert box.messages() == [(third, raws[2])]
    assert dovecot.folder_messages("INBOX") == [raws[2]]
    assert sorted(dovecot.folder_messages("Done")) == sorted([raws[0], raws[1]])


@pytest.mark.parametrize("mode", IMAP_MODES)
def test_imap_processed_deletes_without_a_processed_folder(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 2)
    with open_mailbox(url(dovecot, mode)) as box:
        (first, _), (second, _) = box.messages()
        box.processed(first)
        assert box.messages() == [(second, raws[1])]
    with open_mailbox(url(dovecot, mode)) as box:
        assert box.messages() == [(second, raws[1])]
    assert dovecot.folder_messages("INBOX") == [raws[1]]  # expunged, not just flagged
    assert dovecot.folders() == []  # and no folder was made for it
    assert any("expunged=1" in line for line in logouts(dovecot, 2))


@pytest.mark.parametrize("mode", IMAP_MODES)
def test_imap_kept_moves_to_the_kept_folder(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, mode)) as box:
        (first, _), (second, _), (third, _) = box.messages()
        box.kept(first)
        box.processed(second)
        assert [i for i, _ in box.messages()] == [third]
    with open_mailbox(url(dovecot, mode, kept="Later")) as box:
        box.kept(third)
        assert box.messages() == []
    assert dovecot.folder_messages("INBOX") == []
    assert dovecot.folder_messages("course-kept") == [raws[0]]
    assert dovecot.folder_messages("Later") == [raws[2]]
    assert dovecot.folders() == ["Later", "course-kept"]


def test_imap_reads_another_folder_and_moves_to_non_ascii_folders(dovecot: Dovecot) -> None:
    raws = fill(dovecot, 2, folder="Bounces")
    fill(dovecot, 1)  # in INBOX, not read
    address = url(dovecot, "imap-plain", path="/Bounces", processed="Traités", kept="R&D")
    with open_mailbox(address) as box:
        (first, _), (second, _) = box.messages()
        box.processed(first)
        box.kept(second)
        assert box.messages() == []
    # Stored under their modified UTF-7 names, as Dovecot spells them.
    assert dovecot.folder_messages("Trait&AOk-s") == [raws[0]]
    assert dovecot.folder_messages("R&-D") == [raws[1]]
    assert len(dovecot.folder_messages("INBOX")) == 1


@pytest.mark.parametrize("capabilities", [{"MOVE"}, {"MOVE", "UIDPLUS"}])
def test_imap_without_move_copies_flags_and_expunges(
    dovecot: Dovecot, capabilities: set[str]
) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, "imap-plain", processed="Done")) as box:
        assert isinstance(box, ImapMailbox)
        box._capabilities -= capabilities  # as a server without MOVE (and UIDPLUS) would be
        (first, _), (second, _), (third, _) = box.messages()
        box.processed(first)
        box.kept(third)
        assert box.messages() == [(second, raws[1])]
    assert dovecot.folder_messages("INBOX") == [raws[1]]
    assert dovecot.folder_messages("Done") == [raws[0]]
    assert dovecot.folder_messages("course-kept") == [raws[2]]


def test_imap_messages_marked_deleted_by_others_are_left_alone(dovecot: Dovecot) -> None:
    """A message marked \\Deleted is never listed (one left half-moved, copied and marked
    but not expunged, is not handled again), and deleting ours expunges only ours (UID
    EXPUNGE): what someone else marked stays until they expunge it."""
    raws = fill(dovecot, 3)
    client = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        client.login(dovecot.user, dovecot.password)
        client.select("INBOX")
        client.store("1", "+FLAGS", "(\\Deleted)")
    finally:
        client.logout()
    with open_mailbox(url(dovecot, "imap-plain")) as box:
        found = box.messages()
        assert [raw for _, raw in found] == raws[1:]
        box.processed(found[0][0])
        assert [raw for _, raw in box.messages()] == [raws[2]]
    assert dovecot.folder_messages() == [raws[0], raws[2]]


def test_imap_ids_are_checked_against_uidvalidity(dovecot: Dovecot) -> None:
    fill(dovecot, 1)
    with open_mailbox(url(dovecot, "imap-plain")) as box:
        [(message_id, _)] = box.messages()
        validity, uid = message_id.split(":")
        with pytest.raises(MailboxError, match="UIDVALIDITY changed"):
            box.processed(f"{int(validity) + 1}:{uid}")
        with pytest.raises(ValueError, match="not an IMAP message id"):
            box.kept("0000001a4f3b2c1d")
        assert box.messages() == [(message_id, message(1))]
        box.processed(message_id)
        box.processed(message_id)  # already gone: nothing happens
    assert dovecot.folder_messages("INBOX") == []


def test_imap_missing_folder_is_a_mailbox_error(dovecot: Dovecot) -> None:
    with pytest.raises(MailboxError, match="cannot select folder 'Nowhere'"):
        with open_mailbox(url(dovecot, "imap-plain", path="/Nowhere")):
            pass


def test_starttls_and_plain_are_what_dovecot_sees(dovecot: Dovecot) -> None:
    for mode in IMAP_MODES + POP3_MODES:
        with open_mailbox(url(dovecot, mode)) as box:
            box.messages()
    lines = logins(dovecot, 6)
    assert len(lines) == 6
    tls = [line.rstrip().split(", ")[-2] for line in lines]  # "..., TLS, session=<...>"
    assert tls == ["secured", "TLS", "TLS", "secured", "TLS", "TLS"]


# -- POP3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", POP3_MODES)
def test_pop3_lists_messages_by_uidl(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, mode)) as box:
        found = box.messages()
        assert [raw for _, raw in found] == raws
        assert len({i for i, _ in found}) == 3
        assert box.messages(limit=2) == found[:2]
    with open_mailbox(url(dovecot, mode)) as box:
        assert box.messages() == found  # UIDLs are stable across sessions
    assert dovecot.folder_messages() == raws


@pytest.mark.parametrize("mode", POP3_MODES)
def test_pop3_skipped_ids_are_not_downloaded(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, mode)) as box:
        ids = [i for i, _ in box.messages()]
        assert box.messages(skip=frozenset({ids[1]})) == [(ids[0], raws[0]), (ids[2], raws[2])]
    # "retr=<count>/<bytes>": five retrieved (3 + 2), the skipped one never.
    assert any("retr=5/" in line for line in logouts(dovecot, 1))


@pytest.mark.parametrize("mode", POP3_MODES)
def test_pop3_processed_deletes_and_kept_stays(dovecot: Dovecot, mode: str) -> None:
    raws = fill(dovecot, 3)
    with open_mailbox(url(dovecot, mode)) as box:
        (first, _), (second, _), (third, _) = box.messages()
        box.processed(first)
        box.kept(second)
        assert [i for i, _ in box.messages()] == [second, third]
        assert [i for i, _ in box.messages(skip={second})] == [third]
    assert dovecot.folder_messages() == [raws[1], raws[2]]  # deleted at QUIT
    with open_mailbox(url(dovecot, mode)) as box:
        # A kept message stays on the server; the caller passes its id to skip it.
        assert box.messages() == [(second, raws[1]), (third, raws[2])]
        assert box.messages(skip=frozenset({second})) == [(third, raws[2])]
        box.processed(third)
    with open_mailbox(url(dovecot, mode)) as box:
        assert box.messages(skip=frozenset({second})) == []
        assert box.messages() == [(second, raws[1])]


def test_pop3_processed_messages_are_deleted_even_after_an_error(dovecot: Dovecot) -> None:
    fill(dovecot, 2)
    with pytest.raises(RuntimeError, match="the caller failed"):
        with open_mailbox(url(dovecot, "pop3-plain")) as box:
            (first, _), _ = box.messages()
            box.processed(first)
            raise RuntimeError("the caller failed")
    assert dovecot.folder_messages() == [message(2)]


def test_pop3_processed_without_listing_first(dovecot: Dovecot) -> None:
    fill(dovecot, 2)
    with open_mailbox(url(dovecot, "pop3-plain")) as box:
        ids = [i for i, _ in box.messages()]
    with open_mailbox(url(dovecot, "pop3-plain")) as box:
        box.processed(ids[1])
        box.processed("no-such-uidl")  # gone already: nothing happens
    assert dovecot.folder_messages() == [message(1)]


@pytest.mark.parametrize("mode", ["imap-plain", "pop3-plain"])
def test_long_lines_and_leading_dots_arrive_intact(dovecot: Dovecot, mode: str) -> None:
    body = b"<html>" + b"x" * 5000 + b"</html>\r\n.\r\n..two dots\r\n.one dot\r\n"
    raw = message(1, body)
    dovecot.deliver(raw)
    with open_mailbox(url(dovecot, mode)) as box:
        [(_, got)] = box.messages()
    assert got == raw


# -- both: failures --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", IMAP_MODES + POP3_MODES)
def test_wrong_password_is_a_mailbox_error_without_the_password(
    dovecot: Dovecot, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + dovecot.password
    with pytest.raises(MailboxError, match="refused") as raised:
        with open_mailbox(url(dovecot, mode, password=wrong)):
            pass
    text = str(raised.value)
    assert dovecot.user in text
    assert "Wr0ng" not in text and dovecot.password not in text
    assert "Wr0ng" not in repr(raised.value.__context__)
    assert "Wr0ng" not in caplog.text


@pytest.mark.parametrize("mode", ["imaps", "imap-starttls", "pop3s", "pop3-stls"])
def test_self_signed_certificate_is_refused_unless_verify_false(
    dovecot: Dovecot, mode: str
) -> None:
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
        with open_mailbox(url(dovecot, mode, verify="true")):
            pass


@pytest.mark.parametrize("mode", ["imap-plain", "pop3-plain"])
def test_non_ascii_password(dovecot: Dovecot, mode: str) -> None:
    other = dovecot.server.add_user(password="pässwörd-€")
    raw = message(1)
    other.deliver(raw)
    with open_mailbox(url(other, mode)) as box:
        assert [r for _, r in box.messages()] == [raw]


def test_nothing_is_logged_but_ids_and_folders(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for mode, options in (("imap-plain", {"processed": "Done"}), ("pop3-plain", {})):
        fill(dovecot, 2)
        with open_mailbox(url(dovecot, mode, **options)) as box:
            (first, _), *rest = box.messages()
            box.processed(first)
            for message_id, _ in rest:
                box.kept(message_id)
    assert "deleted message" in caplog.text or "moved message" in caplog.text
    assert dovecot.password not in caplog.text
    assert "Delivery to reader" not in caplog.text and "Undelivered" not in caplog.text
