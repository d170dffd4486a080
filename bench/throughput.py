"""Sending throughput: `course scheduler` against plain smtplib, in interleaved rounds.

Every figure is a ratio to plain smtplib sending the same bytes over one persistent
connection to the same ``smtp-sink``, measured right before and right after that figure,
because the machine's speed moves from minute to minute (other work, CPU frequency, where
the kernel places the processes). A round is::

    raw, variant A, raw, variant B, raw, ..., raw

and each variant's ratio in a round is its rate divided by the mean of the two raw samples
around it. The variants' order turns by one place each round, so that none always runs
first or last. The report gives, per variant, the median rate and the median ratio over
the rounds with the lowest and highest ratio, and the raw samples' median.

Each sample is a process of its own, so that the pinned mode can place it: the senders
(`course scheduler`, the raw client, the peer) on CPU 0 and the sink on CPU 1 with
``taskset``. In the natural mode nothing is pinned. PostgreSQL and this driver, which only
waits and polls, are never pinned.

How a `course scheduler` sample is timed: a fresh database with N readers whose first
lesson is queued but not due; the scheduler processes start (``COURSE_TICK_SECONDS=0.1``)
and the clock starts once each has logged an idle tick and the N lessons are made due in
one committed UPDATE. It stops at the last ``sent_at`` the senders recorded, once all N
are recorded. So the figure includes the wait for the next tick (at most 0.1 s), and
excludes the processes' start.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, func, select, update

from bench.common import course_env, database, free_port, pg_schema, pinned, seed, smtp_sink, tail
from course.models import Delivery, DeliveryStatus

ROOT = Path(__file__).resolve().parent.parent
SENDER_CPU, SINK_CPU = 0, 1
TICK_SECONDS = 0.1
#: A sample fails when nothing more was sent for this long.
STALL_SECONDS = 60.0
NOT_YET = datetime(2099, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    database: str = "postgresql"
    connections: int = 1  # COURSE_SMTP_CONNECTIONS per process
    processes: int = 1  # `course scheduler` processes sharing the queue
    peer: bool = False  # django-post_office instead of `course scheduler`


VARIANTS = (
    Variant("sqlite_1", "course scheduler, SQLite, 1 connection", database="sqlite"),
    Variant("postgresql_1", "course scheduler, PostgreSQL, 1 connection"),
    Variant("postgresql_4", "course scheduler, PostgreSQL, 4 connections", connections=4),
    Variant(
        "postgresql_2proc",
        "course scheduler x2 processes, PostgreSQL, 1 connection each",
        processes=2,
    ),
    Variant("post_office", "django-post_office (peer), PostgreSQL", peer=True),
)


def peer_available() -> bool:
    """django-post_office is an optional peer, installed only for the benchmark."""
    return all(importlib.util.find_spec(m) is not None for m in ("django", "post_office"))


def course_command() -> list[str]:
    script = Path(sys.executable).with_name("course")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from course.cli import main; main()"]


def capture_message(workdir: Path) -> bytes:
    """The exact bytes `course send-due` sends for the first lesson to the first reader."""
    from aiosmtpd.controller import Controller

    captured: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            captured.append(bytes(envelope.original_content))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with database("sqlite", workdir) as url:
            seed(url, 1, 1)
            done = subprocess.run(
                [*course_command(), "send-due"],
                env=course_env(url, f"smtp://127.0.0.1:{port}"),
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if done.returncode != 0:
                raise RuntimeError(f"course send-due failed:\n{done.stdout}{done.stderr}")
    finally:
        controller.stop()
    if len(captured) != 1:
        raise RuntimeError(f"course send-due sent {len(captured)} messages, expected 1")
    return captured[0]


def raw_sample(port: int, message_file: Path, messages: int, cpu: int | None) -> float:
    """Messages per second of plain smtplib (``bench.raw_client``)."""
    out = subprocess.run(
        [
            *pinned(cpu),
            sys.executable,
            "-m",
            "bench.raw_client",
            str(port),
            str(message_file),
            str(messages),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return messages / float(json.loads(out.stdout)["seconds"])


@contextmanager
def _schedulers(
    variant: Variant, url: str, port: int, cpu: int | None, logs: list[Path]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`course scheduler` processes, stopped with SIGTERM afterwards."""
    env = course_env(
        url,
        f"smtp://127.0.0.1:{port}",
        COURSE_SMTP_CONNECTIONS=str(variant.connections),
        COURSE_TICK_SECONDS=str(TICK_SECONDS),
    )
    procs: list[subprocess.Popen[bytes]] = []
    files: list[IO[bytes]] = []
    try:
        for log in logs:
            f: IO[bytes] = log.open("wb")
            files.append(f)
            procs.append(
                subprocess.Popen(
                    [*pinned(cpu), *course_command(), "scheduler"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=f,
                    cwd=ROOT,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in files:
            f.close()


def course_sample(
    variant: Variant, port: int, messages: int, workdir: Path, cpu: int | None
) -> float:
    """Messages per second of `course scheduler` process(es) sending ``messages`` lessons."""
    with database(variant.database, workdir) as url:
        seed(url, messages, messages, due_at=NOT_YET)
        engine = create_engine(url)
        stamp = f"{variant.key}-{time.monotonic_ns()}"
        logs = [workdir / f"{stamp}-{n}.log" for n in range(variant.processes)]
        try:
            with _schedulers(variant, url, port, cpu, logs) as procs:
                deadline = time.monotonic() + STALL_SECONDS
                while not all("tick worker=" in log.read_text(errors="replace") for log in logs):
                    for proc, log in zip(procs, logs, strict=True):
                        if proc.poll() is not None:
                            raise RuntimeError(f"course scheduler exited:\n{tail(log)}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"course scheduler did not tick:\n{tail(logs[0])}")
                    time.sleep(0.05)
                with engine.begin() as conn:
                    conn.execute(
                        update(Delivery)
                        .where(Delivery.status == DeliveryStatus.QUEUED)
                        .values(due_at=datetime.now(UTC))
                    )
                started = datetime.now(UTC)
                last = _wait_sent(engine, messages, procs, logs)
        finally:
            engine.dispose()
            for log in logs:
                log.unlink(missing_ok=True)
    return messages / (last - started).total_seconds()


def _wait_sent(
    engine: Any, messages: int, procs: list[subprocess.Popen[bytes]], logs: list[Path]
) -> datetime:
    """Poll until ``messages`` deliveries are recorded sent; the last ``sent_at``."""
    done, progress = -1, time.monotonic()
    while True:
        with engine.connect() as conn:
            count = conn.scalar(select(func.count()).where(Delivery.sent_at.is_not(None)))
            if count >= messages:
                last: datetime = conn.scalar(select(func.max(Delivery.sent_at)))
                return last if last.tzinfo else last.replace(tzinfo=UTC)
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"course scheduler exited:\n{tail(log)}")
        if count != done:
            done, progress = count, time.monotonic()
        elif time.monotonic() - progress > STALL_SECONDS:
            raise RuntimeError(f"stalled at {count} of {messages} sent:\n{tail(logs[0])}")
        time.sleep(0.1)


def peer_sample(
    port: int, message_file: Path, messages: int, workdir: Path, cpu: int | None
) -> tuple[float, int]:
    """Messages per second of django-post_office (``bench.post_office_peer``), and the size
    of the message it builds."""
    log = workdir / f"post_office-{time.monotonic_ns()}.log"
    with pg_schema() as schema, log.open("wb") as err:
        proc = subprocess.Popen(
            [
                *pinned(cpu),
                sys.executable,
                "-m",
                "bench.post_office_peer",
                str(port),
                schema,
                str(message_file),
                str(messages),
                str(workdir),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"post_office peer did not start:\n{tail(log)}")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if not line:
        raise RuntimeError(f"post_office peer failed:\n{tail(log)}")
    log.unlink(missing_ok=True)
    out = json.loads(line)
    if out["sent"] != messages:
        raise RuntimeError(f"post_office sent {out['sent']} of {messages}")
    return messages / float(out["seconds"]), int(out["message_bytes"])


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_mode(
    mode: str,
    variants: tuple[Variant, ...],
    message_file: Path,
    messages: int,
    rounds: int,
    workdir: Path,
    log: Any = print,
) -> dict[str, Any]:
    """All rounds in one mode ("natural" or "pinned"), with a sink of its own."""
    senders = SENDER_CPU if mode == "pinned" else None
    raw: list[float] = []
    rates: dict[str, list[float]] = {v.key: [] for v in variants}
    ratios: dict[str, list[float]] = {v.key: [] for v in variants}
    per_round: list[dict[str, float]] = []
    out: dict[str, Any] = {"mode": mode}
    with smtp_sink(cpu=SINK_CPU if mode == "pinned" else None) as port:
        raw_sample(port, message_file, messages, senders)  # warm-up, not counted
        for r in range(rounds):
            turn = r % len(variants)
            order = variants[turn:] + variants[:turn]
            before = raw_sample(port, message_file, messages, senders)
            raw.append(before)
            this_round: dict[str, float] = {"raw_0": before}
            for v in order:
                if v.peer:
                    rate, out["peer_message_bytes"] = peer_sample(
                        port, message_file, messages, workdir, senders
                    )
                else:
                    rate = course_sample(v, port, messages, workdir, senders)
                after = raw_sample(port, message_file, messages, senders)
                raw.append(after)
                ratio = rate / ((before + after) / 2)
                rates[v.key].append(rate)
                ratios[v.key].append(ratio)
                this_round[v.key] = rate
                this_round[f"raw_after_{v.key}"] = after
                log(
                    f"  {mode} round {r + 1}/{rounds}: {v.key} {rate:.0f} msg/s, "
                    f"raw {before:.0f}/{after:.0f}, ratio {ratio:.2f}"
                )
                before = after
            per_round.append(this_round)
    out["raw_per_s"] = spread(raw)
    out["raw_samples"] = raw
    out["rounds"] = per_round
    out["variants"] = {
        v.key: {
            "label": v.label,
            "per_s": spread(rates[v.key]),
            "ratio": spread(ratios[v.key]),
            "ratios": ratios[v.key],
        }
        for v in variants
    }
    if "post_office" in ratios and "postgresql_1" in ratios:
        # Same rounds: course on PostgreSQL with one connection against the peer.
        against = [c / p for c, p in zip(rates["postgresql_1"], rates["post_office"], strict=True)]
        out["postgresql_1_vs_post_office"] = spread(against)
    return out


def run(
    workdir: Path,
    messages: int,
    rounds: int = 3,
    modes: tuple[str, ...] = ("natural",),
    log: Any = print,
) -> dict[str, Any]:
    """Every variant in ``rounds`` interleaved rounds per mode."""
    if rounds < 1:
        raise ValueError("at least one round")
    variants: tuple[Variant, ...] = VARIANTS
    out: dict[str, Any] = {"messages": messages, "rounds": rounds, "tick_seconds": TICK_SECONDS}
    if not peer_available():
        variants = tuple(v for v in VARIANTS if not v.peer)
        out["peer"] = "skipped: django-post_office is not installed"
    else:
        from importlib.metadata import version

        out["peer"] = f"django-post_office {version('django-post_office')}"
    message = capture_message(workdir)
    message_file = workdir / "lesson.eml"
    message_file.write_bytes(message)
    out["message_bytes"] = len(message)
    out["modes"] = {
        mode: run_mode(mode, variants, message_file, messages, rounds, workdir, log)
        for mode in modes
    }
    return out
