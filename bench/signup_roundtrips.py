"""What one signup costs the database (and Redis): statements and round trips, PostgreSQL.

``POST /subscribe`` stores the request and answers (``course.web.public._record_signup``);
the decision runs after the answer has gone out, in the same worker
(``response.call_on_close`` -> ``course.signups.decide_signups`` ->
``course.subscriptions.decide_signup_request`` -> ``subscribe``), or else in the next
scheduler tick. This builds the production app in-process (``course.app.create_app``, the
settings of ``bench/signup.py``: PostgreSQL in a schema of its own, the rate limiter on
Redis), sends signups through Flask's test client, and records for each signup, in two
phases, *the request* (until the answer is there) and *after the answer* (closing the
response runs the decision):

- every SQL statement SQLAlchemy executes (a ``before_cursor_execute`` listener);
- every round trip on the wire: libpq's protocol trace of each pooled connection, one
  round trip per ``ReadyForQuery`` the server sends. These add to the statements the pool's
  pre-ping, ``BEGIN``, ``COMMIT``/``ROLLBACK`` and psycopg's one-off ``Parse`` when it
  prepares a statement (its 6th use on a connection);
- the Redis commands of the rate limiter (``redis.Redis.execute_command`` counted).

The counts are of the steady state: warm-up signups first (the pool's connection is open,
the course is compiled, psycopg has prepared what repeats), then the measured ones, each
a new address at a new domain. Run it with ``python -m bench.signup_roundtrips``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

PHASES = ("request", "after_answer")
_READY = re.compile(r"^B\t\d+\tReadyForQuery\t[^\n]*$", re.M)
_QUERY = re.compile(r"^F\t\d+\tQuery\t \"(.*)\"\s*$", re.S)
_PARSE = re.compile(r"^F\t\d+\tParse\t \"([^\"]*)\" \"(.*)\" \d+(?: NNNN)*\s*$", re.S)
_BIND = re.compile(r"^F\t\d+\tBind\t \"[^\"]*\" \"([^\"]*)\"", re.M)


def shorten(sql: str, width: int = 110) -> str:
    """One line of at most ``width`` characters."""
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 3] + "..."


class Recorder:
    """Statements, wire round trips and Redis commands of one engine, per phase.

    ``phase`` names what runs now; None records nothing (warm-up)."""

    def __init__(self, engine: Engine, workdir: Path) -> None:
        self.workdir = workdir
        self.phase: str | None = None
        self.statements: list[tuple[str, str]] = []
        self.round_trips: list[tuple[str, str]] = []
        self.redis: list[tuple[str, str]] = []
        self._traces: dict[int, tuple[int, Path]] = {}
        #: Prepared statements' SQL by name, per connection (psycopg's "_pg3_N").
        self._prepared: dict[int, dict[str, str]] = {}
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "connect", self._connect)
        event.listen(engine, "checkin", self._checkin)

    # -- SQLAlchemy events -------------------------------------------------------------

    def _statement(self, conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if self.phase is not None:
            self.statements.append((self.phase, sql))

    def _connect(self, dbapi_conn: Any, record: Any) -> None:
        self._trace(dbapi_conn)

    def _checkin(self, dbapi_conn: Any, record: Any) -> None:
        """A session gave its connection back (after the pool's reset): everything on the
        wire since the last check-in (the pre-ping on check-out included) was this use."""
        if dbapi_conn is None:
            return
        if id(dbapi_conn) not in self._traces:  # opened before this recorder: from now on
            self._trace(dbapi_conn)
            return
        dbapi_conn.pgconn.untrace()  # flushes the trace
        fd, path = self._traces.pop(id(dbapi_conn))
        text = path.read_text(errors="replace")
        os.close(fd)
        path.unlink()
        trips = self._round_trips(id(dbapi_conn), text)
        if self.phase is not None:
            self.round_trips += [(self.phase, trip) for trip in trips]
        self._trace(dbapi_conn)

    def _trace(self, dbapi_conn: Any) -> None:
        from psycopg import pq

        fd, name = tempfile.mkstemp(prefix="libpq-", suffix=".trace", dir=self.workdir)
        dbapi_conn.pgconn.trace(fd)
        dbapi_conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        self._traces[id(dbapi_conn)] = (fd, Path(name))

    # -- the trace ------------------------------------------------------------------

    def _round_trips(self, conn_id: int, text: str) -> list[str]:
        """One line per round trip: what the client sent before the server's ReadyForQuery."""
        prepared = self._prepared.setdefault(conn_id, {})
        trips = []
        start = 0
        for ready in _READY.finditer(text):
            chunk = text[start : ready.start()]
            start = ready.end() + 1
            sent = re.split(r"(?m)^(?=[FB]\t\d+\t)", chunk)
            messages = [m for m in sent if m.startswith("F\t")]
            trips.append(self._describe(messages, prepared))
        return trips

    @staticmethod
    def _describe(messages: list[str], prepared: dict[str, str]) -> str:
        kinds = [m.split("\t", 3)[2] for m in messages]
        for m in messages:
            found = _QUERY.match(m)
            if found:
                text = shorten(found.group(1))
                # SQLAlchemy's pool_pre_ping on check-out (psycopg's ping is an empty query)
                return "; (pool pre-ping)" if text == ";" else text
        parse = next((_PARSE.match(m) for m in messages if _PARSE.match(m)), None)
        if parse is not None:
            name, sql = parse.group(1), parse.group(2)
            if name:
                prepared[name] = sql
            if "Execute" not in kinds:
                return "[prepare] " + shorten(sql, 100)
            return shorten(sql)
        bind = next((_BIND.search(m) for m in messages if _BIND.search(m)), None)
        if bind is not None and bind.group(1):
            return "[prepared] " + shorten(prepared.get(bind.group(1), bind.group(1)), 99)
        return "(" + ", ".join(kinds) + ")"


@contextmanager
def counting_redis(recorder: Recorder) -> Iterator[None]:
    """Count the Redis commands (and pipelines) sent while this is open."""
    import redis
    from redis.client import Pipeline

    command, execute = redis.Redis.execute_command, Pipeline.execute

    def counted_command(self: Any, *args: Any, **options: Any) -> Any:
        if recorder.phase is not None:
            recorder.redis.append((recorder.phase, " ".join(str(a) for a in args[:2])))
        return command(self, *args, **options)

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if recorder.phase is not None:
            recorder.redis.append((recorder.phase, f"pipeline of {len(self.command_stack)}"))
        return execute(self, *args, **kwargs)

    redis.Redis.execute_command = counted_command  # type: ignore[method-assign]
    Pipeline.execute = counted_execute  # type: ignore[method-assign]
    try:
        yield
    finally:
        redis.Redis.execute_command = command  # type: ignore[method-assign]
        Pipeline.execute = execute  # type: ignore[method-assign]


def measure(
    db_url: str,
    redis_url: str,
    workdir: Path,
    *,
    signups: int = 3,
    warmup: int = 8,
) -> dict[str, Any]:
    """Statements, round trips and Redis commands of ``signups`` signups, per phase.

    ``db_url``: a migrated PostgreSQL database with no signups; ``redis_url``'s database is
    flushed before and after."""
    import redis

    from bench.signup import production_settings
    from course.app import create_app

    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    app = create_app(production_settings(db_url, redis_url))
    engine: Engine = app.extensions["course"].engine
    recorder = Recorder(engine, workdir)
    client = app.test_client()
    per_signup: list[dict[str, dict[str, int]]] = []
    try:
        with counting_redis(recorder):
            for n in range(warmup + signups):
                measured = n >= warmup
                before = {
                    "statements": len(recorder.statements),
                    "round_trips": len(recorder.round_trips),
                    "redis": len(recorder.redis),
                }
                recorder.phase = "request" if measured else None
                response = client.post(
                    "/subscribe",
                    json={"email": f"rt-{n}@rt{n}.example.com", "name": "Load"},
                )
                if response.status_code != 202:
                    raise RuntimeError(f"signup answered {response.status_code}")
                recorder.phase = "after_answer" if measured else None
                response.close()  # runs the decision, as gunicorn does after sending
                recorder.phase = None
                if measured:
                    per_signup.append(_counts(recorder, before))
    finally:
        engine.dispose()
        store.flushdb()
        store.close()
    out: dict[str, Any] = {"signups": signups, "warmup_signups": warmup, "per_signup": per_signup}
    # The lists of the first measured signup (each signup's counts are in per_signup).
    for kind in ("statements", "round_trips", "redis"):
        items: list[tuple[str, str]] = getattr(recorder, kind)
        out[kind] = {
            phase: [text for p, text in items if p == phase][: per_signup[0][phase][kind]]
            for phase in PHASES
        }
    out["statements"] = {p: [shorten(s) for s in v] for p, v in out["statements"].items()}
    return out


def _counts(recorder: Recorder, before: dict[str, int]) -> dict[str, dict[str, int]]:
    """This signup's counts per phase (what was recorded since ``before``)."""
    counts: dict[str, dict[str, int]] = {p: {} for p in PHASES}
    for kind, start in before.items():
        items: list[tuple[str, str]] = getattr(recorder, kind)[start:]
        for phase in PHASES:
            counts[phase][kind] = sum(1 for p, _ in items if p == phase)
    return counts


def report(result: dict[str, Any]) -> str:
    """The statements and round trips of one signup, as text."""
    lines = []
    counts = result["per_signup"]
    titles = {
        "request": "the request, until the answer (POST /subscribe)",
        "after_answer": "after the answer (decide_signups, in the same worker)",
    }
    for phase in PHASES:
        lines.append(f"{titles[phase]}:")
        lines.append(f"  SQL statements ({len(result['statements'][phase])}):")
        lines += [f"    {s}" for s in result["statements"][phase]]
        lines.append(f"  round trips to PostgreSQL ({len(result['round_trips'][phase])}):")
        lines += [f"    {s}" for s in result["round_trips"][phase]]
        lines.append(f"  Redis commands ({len(result['redis'][phase])}):")
        lines += [f"    {s}" for s in result["redis"][phase]]
    totals = {
        kind: sorted({sum(c[p][kind] for p in PHASES) for c in counts})
        for kind in ("statements", "round_trips", "redis")
    }
    lines.append(
        f"per signup, {result['signups']} measured after {result['warmup_signups']} warm-up "
        "(request + after the answer = total; the total of each measured signup):"
    )
    for kind in ("statements", "round_trips", "redis"):
        first = counts[0]
        lines.append(
            f"  {kind.replace('_', ' ')}: {first['request'][kind]} + "
            f"{first['after_answer'][kind]} = "
            f"{first['request'][kind] + first['after_answer'][kind]} "
            f"({', '.join(str(t) for t in totals[kind])})"
        )
    return "\n".join(lines)


def main() -> None:
    from bench.common import database
    from bench.signup import REDIS_URL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signups", type=int, default=3, help="measured signups (default 3)")
    parser.add_argument("--warmup", type=int, default=8, help="warm-up signups (default 8)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="its database is flushed")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database("postgresql", Path(tmp)) as url:
        result = measure(url, args.redis_url, Path(tmp), signups=args.signups, warmup=args.warmup)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
