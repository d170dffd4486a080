"""Due-query scaling: a tick's cost must follow what is due, not how many readers exist."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from bench.common import bench_settings, database, seed, timed
from course.db import make_engine, make_sessionmaker
from course.sending import Sender


class NullTransport:
    """Accepts every message and drops it: this benchmark is about the database."""

    def open(self) -> AbstractContextManager[NullTransport]:
        return nullcontext(self)

    def send(self, envelope_from: str, to: str, message: bytes) -> None:
        return None


def tick_costs(url: str) -> tuple[float, float]:
    """Seconds for one tick that sends everything due, then for an idle tick."""
    settings = bench_settings(url, "outbox:/dev/null", BATCH_SIZE=500)
    engine = make_engine(url, asynchronous_commit=True)
    sender = Sender(settings, make_sessionmaker(engine), NullTransport())
    sender.library.current()
    with engine.connect() as conn:  # open the pool's connection outside the timing
        conn.exec_driver_sql("SELECT 1")
    busy, _ = timed(sender.tick)
    idle, _ = timed(sender.tick)
    engine.dispose()
    return busy, idle


def run(
    workdir: Path, small: int, large: int, due: int, kind: str = "postgresql"
) -> dict[str, Any]:
    """A tick with ``due`` due among ``small`` and among ``large`` readers, and an idle tick."""
    out: dict[str, Any] = {"database": kind, "due": due, "small": small, "large": large}
    with database(kind, workdir) as url:
        seed(url, small, due)
        out["small_tick_s"], out["small_idle_tick_s"] = tick_costs(url)
    with database(kind, workdir) as url:
        seed(url, large, due)
        out["large_tick_s"], out["large_idle_tick_s"] = tick_costs(url)
    out["ratio"] = out["large_tick_s"] / out["small_tick_s"]
    return out
