"""A tiny authoritative DNS server on loopback, for tests: it answers from a dict.

Records live in :class:`Zone` (name and type to values, as text). A name with no records
at all is NXDOMAIN; a name with records of other types answers with no records (NODATA).
The server listens on UDP and TCP on the same free port, so answers too large for UDP
(long DKIM keys) come over TCP as with a real server.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _rdata(rtype: str, value: str) -> Any:
    if rtype == "TXT":
        # One TXT string holds at most 255 bytes; longer values are split, as DNS hosts do.
        data = value.encode()
        return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])
    if rtype == "MX":
        preference, host = value.split()
        return MX(host, int(preference))
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    raise ValueError(f"unsupported record type {rtype}")


class Zone:
    """The records the server answers with; change them at any time."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}

    def add(self, name: str, rtype: str, *values: str) -> None:
        self.records.setdefault((_key(name), rtype), []).extend(values)

    def set(self, name: str, rtype: str, *values: str) -> None:
        """Replace the records of one type at ``name`` (none: remove them)."""
        self.records.pop((_key(name), rtype), None)
        if values:
            self.add(name, rtype, *values)

    def remove(self, name: str) -> None:
        """Remove every record at ``name``: it becomes NXDOMAIN."""
        for key in [k for k in self.records if k[0] == _key(name)]:
            del self.records[key]

    def values(self, name: str, rtype: str) -> list[str]:
        return list(self.records.get((_key(name), rtype), []))


class ZoneResolver(BaseResolver):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.questions: list[tuple[str, str]] = []  # (name, type), in the order asked

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        reply.header.aa = 1
        qname: DNSLabel = request.q.qname
        name = _key(str(qname))
        rtype = QTYPE[request.q.qtype]
        self.questions.append((name, rtype))
        if not any(key[0] == name for key in self.zone.records):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in self.zone.values(name, rtype):
            reply.add_answer(RR(qname, request.q.qtype, rdata=_rdata(rtype, value), ttl=60))
        return reply


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port for the DNS server")


class LoopbackDNS:
    """The zone served on 127.0.0.1:``port`` over UDP and TCP, until :meth:`stop`."""

    def __init__(self, zone: Zone | None = None) -> None:
        self.zone = zone or Zone()
        self.port = _free_port()
        quiet = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
        resolver = ZoneResolver(self.zone)
        self.questions = resolver.questions
        self._servers = [
            DNSServer(resolver, address="127.0.0.1", port=self.port, tcp=tcp, logger=quiet)
            for tcp in (False, True)
        ]
        self._threads: list[threading.Thread] = []

    def start(self) -> LoopbackDNS:
        for server in self._servers:
            thread = threading.Thread(
                target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
