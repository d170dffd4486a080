"""The outbox transport: every message becomes an ``.eml`` file in a folder (development)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutboxTransport:
    """Writes each message to ``<folder>/<time>-<recipient>.eml``, atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @contextmanager
    def open(self) -> Iterator[OutboxTransport]:
        self.folder.mkdir(parents=True, exist_ok=True)
        yield self

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        """Write the message; a reader never sees a half-written file."""
        safe_to = re.sub(r"[^A-Za-z0-9._-]", "_", to)[:60]
        name = f"{time.time_ns()}-{safe_to}.eml"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(message)
        os.replace(tmp, self.folder / name)

    def messages(self) -> list[Path]:
        """The stored messages, newest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.eml"), key=lambda p: p.name, reverse=True)
