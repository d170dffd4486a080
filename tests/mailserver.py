"""A private Dovecot (IMAP and POP3) on loopback, for tests of :mod:`course.mail.mailbox`.

Nothing is installed here: Dovecot comes from Debian's packages
(``apt-get install -y dovecot-imapd dovecot-pop3d``). Without it the tests that use the
:func:`dovecot` fixture are skipped, or fail when ``COURSE_TEST_REQUIRE_MAILSERVER`` is set.

The fixture configures and starts its own instance, independent of any system Dovecot:

- everything lives in one temporary folder (``/tmp/course-dovecot-*``): the configuration
  (no ``!include`` of ``/etc/dovecot``), ``base_dir`` with the runtime sockets, ``state_dir``,
  the log, a self-signed certificate made with ``cryptography``, a passwd-file per user and
  their Maildirs. It is not a pytest ``tmp_path``: Dovecot's UNIX sockets live under
  ``base_dir`` and a socket path must stay under ~108 bytes;
- it listens on four free loopback ports: IMAP (STARTTLS offered, plain-text login
  allowed), IMAPS, POP3 (STLS offered, plain-text login allowed) and POP3S;
- it runs in the foreground (``dovecot -F``) as a child of the test process, and is stopped
  when the pytest session ends (one server per session: starting it takes a moment).

Each test gets a fresh user (its own passwd-file and Maildir), so tests never see each
other's mail.

Things Dovecot does that this configuration works around:

- it refuses to give mail to UID 0 (the passwd-file userdb reports "invalid UID '0'"). Run
  as root, the master keeps running as root and drops to the ``dovecot``/``dovenull``
  system users (which the Debian package creates) for its internal and login processes,
  and the test users' mail processes run as ``nobody``: their Maildirs belong to
  ``nobody``, and :meth:`Dovecot.deliver` hands its files over to it. Run as any other
  user, the whole instance (login, internal and mail processes) runs as that user;
- it looks at a passwd-file for changes at most once a second, so a user appended to a
  shared file may be unknown to the next login: each user has a file of its own;
- after a failed login it delays every later login from the same IP (2 s, then 4, 8, up to
  15): that "auth penalty" is switched off (it is off when the auth process cannot reach
  the anvil-auth-penalty socket), so a wrong-password test does not slow the ones after
  it. A failed login itself still takes about half a second;
- it answers a login on a plain port from 127.0.0.1 as "secured" (and allows plain-text
  logins there even with the default ``disable_plaintext_auth = yes``): its log says
  ``secured`` for those and ``TLS`` for STARTTLS and implicit-TLS logins, which the tests
  read (:meth:`Dovecot.log_lines`) to check what really went over the wire.
"""

from __future__ import annotations

import datetime
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

INSTALL_COMMAND = "apt-get install -y dovecot-imapd dovecot-pop3d"
REQUIRE_ENV = "COURSE_TEST_REQUIRE_MAILSERVER"

#: Where distributions put Dovecot's protocol binaries (Debian: /usr/lib/dovecot).
_LIBEXEC_DIRS = (Path("/usr/lib/dovecot"), Path("/usr/libexec/dovecot"))
#: A password with characters that must be percent-encoded in a URL and quoted in IMAP.
_PASSWORD_TAIL = ' p@ss/w"rd%#?&'
_STARTUP_SECONDS = 15.0


def _dovecot_binary() -> str | None:
    for candidate in (shutil.which("dovecot"), "/usr/sbin/dovecot"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _missing() -> str | None:
    """Why Dovecot cannot run here, or None."""
    if _dovecot_binary() is None:
        return "dovecot is not installed"
    for protocol in ("imap", "pop3"):
        if not any(os.access(d / protocol, os.X_OK) for d in _LIBEXEC_DIRS):
            return f"Dovecot's {protocol} server is not installed"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _self_signed(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class _Ports:
    imap: int
    imaps: int
    pop3: int
    pop3s: int


class DovecotServer:
    """One running Dovecot instance in its own temporary folder."""

    def __init__(self) -> None:
        binary = _dovecot_binary()
        assert binary is not None
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="course-dovecot-"))
        # The mail processes (another user when run as root) must reach the homes below.
        self.root.chmod(0o711)
        self.users_dir = self.root / "users"
        self.homes = self.root / "home"
        self.log_path = self.root / "dovecot.log"
        self.config_path = self.root / "dovecot.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self.ports = _Ports(0, 0, 0, 0)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
        self._counter = itertools.count(1)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        (self.root / "run").mkdir()
        (self.root / "state").mkdir()
        self.homes.mkdir(mode=0o711)
        self.users_dir.mkdir()
        _self_signed(self.root / "cert.pem", self.root / "key.pem")
        for _attempt in range(3):  # a free port can be taken between choosing and binding it
            self.ports = _Ports(*_free_ports(4))
            self.config_path.write_text(self._config())
            self.log_path.write_text("")
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            if self._wait_ready():
                return
            stderr = self._stop_process()
            problem = f"{stderr}\n{self.log_text()}"
            if "Address already in use" not in problem:
                break
        raise RuntimeError(f"the test Dovecot did not start:\n{problem.strip()}")

    def _wait_ready(self) -> bool:
        """True once the IMAP port greets and the other ports accept connections."""
        assert self.process is not None
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.ports.imap), timeout=2) as s:
                    greeting = s.recv(200)
                for port in (self.ports.imaps, self.ports.pop3, self.ports.pop3s):
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                if greeting.startswith(b"* OK"):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _stop_process(self) -> str:
        """Stop the master (it stops its children) and return what it wrote to stderr."""
        process, self.process = self.process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        try:  # children left behind by a master that had to be killed
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return stderr.decode(errors="replace")

    def stop(self) -> None:
        try:
            self._stop_process()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- configuration and users -----------------------------------------------------------

    def _config(self) -> str:
        root = self.root
        if os.geteuid() == 0:
            users = "default_internal_user = dovecot\ndefault_login_user = dovenull\n"
            chroot = ""
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
            chroot = "  chroot =\n"
        # Plain-text logins are allowed on the non-TLS ports (the client must still be asked
        # for them: course.mail.mailbox requires STARTTLS unless plain=true on loopback).
        return f"""\
# A private test instance written by tests/mailserver.py; nothing from /etc/dovecot.
instance_name = course-test-dovecot
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
shutdown_clients = yes
{users}ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mail_fsync = never
# One passwd-file per user: Dovecot looks at a passwd-file for changes at most once a
# second, so a user appended to a shared one might not be seen by the next login.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.users_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = {self.users_dir}/%u
}}
# No authentication penalty: after a failed login Dovecot delays the next logins from the
# same IP (2 s, then 4, 8, up to 15), which would slow every test after a wrong-password test.
# The penalty is off when the auth process cannot reach this anvil socket.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {self.ports.imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.ports.imaps}
    ssl = yes
  }}
}}
service pop3-login {{
{chroot}  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.ports.pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.ports.pop3s}
    ssl = yes
  }}
}}
"""

    def add_user(self, password: str | None = None) -> Dovecot:
        """A new user with an empty Maildir (and a passwd-file of its own).

        The default password has characters that a URL must percent-encode and IMAP quote."""
        n = next(self._counter)
        user = f"reader{n}@example.test"
        password = f"pw{n}{_PASSWORD_TAIL}" if password is None else password
        if any(c in password for c in ":\r\n"):
            raise ValueError("a passwd-file password cannot contain ':' or line breaks")
        home = self.homes / f"reader{n}"
        home.mkdir(mode=0o700)
        os.chown(home, self.mail_uid, self.mail_gid)
        entry = f"{user}:{password}:{self.mail_uid}:{self.mail_gid}::{home}::\n"
        (self.users_dir / user).write_text(entry, encoding="utf-8")
        return Dovecot(server=self, user=user, password=password, home=home)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Dovecot:
    """What a test sees: the ports, one user of its own and its Maildir."""

    server: DovecotServer
    user: str
    password: str
    home: Path
    _deliveries: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def imap_port(self) -> int:
        return self.server.ports.imap

    @property
    def imaps_port(self) -> int:
        return self.server.ports.imaps

    @property
    def pop3_port(self) -> int:
        return self.server.ports.pop3

    @property
    def pop3s_port(self) -> int:
        return self.server.ports.pop3s

    def maildir(self, folder: str = "INBOX") -> Path:
        """The Maildir++ folder: ``~/Maildir`` for INBOX, ``~/Maildir/.<name>`` otherwise.

        ``folder`` is the name as stored, i.e. IMAP's modified UTF-7 (ASCII names are the
        same), with Dovecot's Maildir++ hierarchy separator ``.``."""
        base = self.home / "Maildir"
        return base if folder.upper() == "INBOX" else base / f".{folder}"

    def deliver(self, raw: bytes, folder: str = "INBOX") -> str:
        """Put a message into the user's Maildir as a delivery agent does: written to
        ``tmp/`` under a unique name, then renamed into ``new/``. Returns the file name."""
        path = self.maildir(folder)
        for directory in (path.parent, path, path / "tmp", path / "new", path / "cur"):
            if not directory.exists():
                directory.mkdir(mode=0o700)
                os.chown(directory, self.server.mail_uid, self.server.mail_gid)
        if folder.upper() != "INBOX" and not (path / "maildirfolder").exists():
            (path / "maildirfolder").touch()
            os.chown(path / "maildirfolder", self.server.mail_uid, self.server.mail_gid)
        seconds, micro = divmod(time.time_ns() // 1000, 1_000_000)
        host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        name = f"{seconds}.M{micro}P{os.getpid()}Q{next(self._deliveries)}.{host},S={len(raw)}"
        tmp = path / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, self.server.mail_uid, self.server.mail_gid)
        tmp.rename(path / "new" / name)
        return name

    def folder_messages(self, folder: str = "INBOX") -> list[bytes]:
        """The messages stored in a folder (``new/`` and ``cur/``), oldest first; [] for a
        folder that does not exist."""
        path = self.maildir(folder)
        files = [
            f for sub in ("new", "cur") if (path / sub).is_dir() for f in (path / sub).iterdir()
        ]
        files.sort(key=lambda f: f.name)  # Maildir names start with the delivery time
        return [f.read_bytes() for f in files]

    def folders(self) -> list[str]:
        """The folders other than INBOX that exist on disk (stored names)."""
        base = self.home / "Maildir"
        if not base.is_dir():
            return []
        return sorted(d.name[1:] for d in base.iterdir() if d.is_dir() and d.name[:1] == ".")

    def log_text(self) -> str:
        """Dovecot's log so far (logins show ``TLS`` or ``secured``, failures their cause)."""
        return self.server.log_text()

    def log_lines(self, *fragments: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        """The log lines about this user that contain all ``fragments``, once there are at
        least ``count`` of them (Dovecot's log process writes a moment after the event), or
        all there are when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                line
                for line in self.log_text().splitlines()
                if (f"<{self.user}>" in line or f"({self.user})" in line)
                and all(fragment in line for fragment in fragments)
            ]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


_SERVER_KEY = pytest.StashKey[DovecotServer]()


def _server(config: pytest.Config) -> DovecotServer:
    """The session's Dovecot, started on first use and stopped when pytest ends."""
    server = config.stash.get(_SERVER_KEY, None)
    if server is None:
        server = DovecotServer()
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        config.stash[_SERVER_KEY] = server
        config.add_cleanup(server.stop)
    return server


@pytest.fixture
def dovecot(request: pytest.FixtureRequest) -> Dovecot:
    """A running private Dovecot and a fresh user on it (see the module docstring)."""
    reason = _missing()
    if reason is not None:
        message = f"{reason}: run `{INSTALL_COMMAND}`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{message} ({REQUIRE_ENV} is set, so this must not be skipped)")
        pytest.skip(message)
    return _server(request.config).add_user()
