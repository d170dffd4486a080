"""Signup under load: ``POST /subscribe`` against a minimal Flask route, in interleaved rounds.

Two gunicorn servers run side by side on loopback with the same command line (same
workers, worker class, bind address and options; each on a free port of its own): one
serves the course app with its production settings, the other ``bench/minimal_app.py``,
a Flask app whose one route reads the same JSON body and answers a short 200. wrk sends
both the same requests: ``POST /subscribe`` with JSON, every request a new address.

The course app runs as in production: ``COURSE_ENV=production`` with its secret key, data
keys, mail URL and a PostgreSQL database in a schema of its own, and the rate limiter on,
counting in Redis (``COURSE_BENCH_REDIS_URL``, by default database 14 of the local Redis,
which is flushed). The load comes from one client address, so the two signup limits are
raised through their real settings (``COURSE_SUBSCRIBE_LIMIT_PER_CLIENT`` and
``COURSE_SUBSCRIBE_LIMIT_WITHOUT_ORIGIN``) to :data:`LIMITS`: never reached, but consulted
on every request (the JSON carries no Origin, so both are). Every address is new and no
more than :data:`SIGNUPS_PER_DOMAIN` share a domain, so no signup meets the caps on
confirmation emails per mailbox or per domain: each is decided as a real new reader, with
a confirmation queued.

The samples run in the order minimal, signup, minimal, signup, ..., minimal; each is a wrk
run of a fixed duration after a short warm-up run that is not timed. A signup sample's
ratio is its rate divided by the mean of the minimal samples before and after it. The
report gives the median ratio with the lowest and highest, the median rates, p50 and p99
latencies, and the errors.

After the runs (servers stopped, so every decision is done) it checks what was stored: the
signup answers 202 once it has stored the request, and decides it after the answer (a new
reader and their confirmation), so the readers plus the requests still undecided must be
at least the 2xx answers of every signup run (warm-ups included), and at most that plus
the requests in flight when wrk stopped (one per connection and run). The rate limiter's
hourly counters in Redis must likewise have counted every request. Then
``bench/signup_roundtrips.py`` counts the statements and round trips of one signup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

from sqlalchemy import create_engine, func, select

from bench.common import DATA_KEY, SECRET, database, free_port, tail
from course.models import Delivery, DeliveryKind, SignupRequest, Subscriber

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
REDIS_URL = os.environ.get("COURSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
#: The signup limits, as high as the load needs: the shape of the defaults (a minute's
#: and an hour's window), far above what one client sends here.
LIMITS = "1000000 per minute;10000000 per hour"
#: At most this many signups per email domain (the cap is 100 confirmations an hour).
SIGNUPS_PER_DOMAIN = 20
COURSE_APP = "course.wsgi:app"
MINIMAL_APP = "bench.minimal_app:app"

# One script for both servers. Each request signs up a new address: the sample's tag (from
# the command line), the thread and a counter make it unique, and a new domain starts every
# SIGNUPS_PER_DOMAIN requests. The script counts 2xx answers, to compare with what was stored.
SCRIPT = r"""
local threads = {}
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end
function init(args)
  tag = args[1] or "x"
  counter = 0
  ok = 0
  bad = 0
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"email": "load-%s-%d-%d@d%s-%d-%d.example.com", "name": "Load"}',
    tag, tid, counter, tag, tid, math.floor(counter / PER_DOMAIN))
  return wrk.format("POST", "/subscribe", {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT %d %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, total_ok, total_bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("PER_DOMAIN", str(SIGNUPS_PER_DOMAIN))


def production_settings(db_url: str, redis_url: str) -> dict[str, str]:
    """The course app's settings (names without ``COURSE_``): production, limiter on Redis."""
    return {
        "ENV": "production",
        "DATABASE_URL": db_url,
        # Required in production; the web app never sends (the scheduler does).
        "MAIL_URL": "smtp://127.0.0.1:2525",
        "SECRET_KEY": SECRET,
        "DATA_KEYS": DATA_KEY,
        "BASE_URL": "https://course.example.org",
        "MAIL_FROM": "Harbor Therapy <course@harbor.example.org>",
        "BOOKING_URL": "https://harbor.example.org/book",
        "PRACTICE_NAME": "Harbor Therapy",
        "RATELIMIT_STORAGE_URL": redis_url,
        "SUBSCRIBE_LIMIT_PER_CLIENT": LIMITS,
        "SUBSCRIBE_LIMIT_WITHOUT_ORIGIN": LIMITS,
    }


def server_env(db_url: str, redis_url: str) -> dict[str, str]:
    """Both servers' environment: this one without ``COURSE_*``, then the settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env.update({f"COURSE_{k}": v for k, v in production_settings(db_url, redis_url).items()})
    return env


def gunicorn_command(app: str, port: int, workers: int) -> list[str]:
    """The one command line of both servers; only the app and the port differ."""
    return [
        GUNICORN,
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        app,
    ]


@contextmanager
def serve(app: str, env: dict[str, str], workers: int, log_path: Path) -> Iterator[str]:
    """gunicorn serving ``app``; yields its base URL once it answers, stops it afterwards."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            gunicorn_command(app, port, workers),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gunicorn {app} exited:\n{tail(log_path)}")
                try:
                    with urlopen(f"{base}/subscribe", timeout=2):
                        break
                except HTTPError:
                    break  # 405 for a GET: it answers
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"gunicorn {app} did not answer:\n{tail(log_path)}"
                        ) from None
                    time.sleep(0.2)
            yield base
        finally:
            if proc.poll() is None:
                proc.terminate()  # graceful: workers finish their request and its decision
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wrk(
    url: str, script: Path, seconds: float, connections: int, threads: int, tag: str
) -> dict[str, Any]:
    """One wrk run; rate, answers, errors and latencies."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is missing: install Debian's wrk package (`apt-get install -y wrk`).")
    done = subprocess.run(
        [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "-s",
            str(script),
            url,
            "--",
            tag,
        ],
        capture_output=True,
        text=True,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    requests, duration_us, ok, bad, conn, read, write, status, timeout, p50, p99 = (
        int(x) for x in line.split()[1:]
    )
    return {
        "requests": requests,
        "requests_per_s": requests / (duration_us / 1e6),
        "ok": ok,
        "non_2xx": bad,
        "socket_errors": conn + read + write + timeout,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summary(samples: list[dict[str, Any]], every_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timed ``samples``; answers and errors summed over ``every_run`` (the
    warm-ups too, since their signups are stored as well)."""
    rates = [s["requests_per_s"] for s in samples]
    return {
        "requests_per_s": statistics.median(rates),
        "requests_per_s_spread": spread(rates),
        "p50_ms": statistics.median(s["p50_ms"] for s in samples),
        "p99_ms": statistics.median(s["p99_ms"] for s in samples),
        "requests": sum(r["requests"] for r in every_run),
        "ok": sum(r["ok"] for r in every_run),
        "non_2xx": sum(r["non_2xx"] for r in every_run),
        "socket_errors": sum(r["socket_errors"] for r in every_run),
    }


def limiter_hits(redis_url: str) -> dict[str, int]:
    """Requests the signup's rate limits counted in Redis (their hourly windows)."""
    import redis

    store = redis.Redis.from_url(redis_url)
    try:
        hits = {"per_client": 0, "without_origin": 0}
        for key in store.scan_iter(match="LIMITS:*/hour"):
            name = key.decode()
            if "public.subscribe_view" not in name:
                continue
            scope = "without_origin" if "subscribe-without-origin" in name else "per_client"
            value: Any = store.get(key)
            hits[scope] += int(value or 0)
        return hits
    finally:
        store.close()


def flush(redis_url: str) -> None:
    """Empty this Redis database (only this one)."""
    import redis

    store = redis.Redis.from_url(redis_url)
    try:
        store.flushdb()
    finally:
        store.close()


def stored(url: str) -> dict[str, int]:
    """What the signups left in the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:

            def count(query: Any) -> int:
                return int(conn.scalar(query) or 0)

            return {
                "subscribers": count(select(func.count()).select_from(Subscriber)),
                "confirmations": count(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.kind == DeliveryKind.CONFIRM)
                ),
                "undecided_requests": count(select(func.count()).select_from(SignupRequest)),
            }
    finally:
        engine.dispose()


def run(
    workdir: Path,
    seconds: float = 15,
    rounds: int | None = None,
    *,
    warmup: float = 2,
    connections: int = 16,
    threads: int = 2,
    workers: int = 4,
    redis_url: str = REDIS_URL,
    roundtrips: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Signup against the minimal route in interleaved rounds, then what was stored.

    ``rounds``: default 5, or 3 for samples shorter than 10 s (what ``--quick`` asks for)."""
    if rounds is None:
        rounds = 5 if seconds >= 10 else 3
    if rounds < 1:
        raise ValueError("at least one round")
    script = workdir / "signup.lua"
    script.write_text(SCRIPT)
    out: dict[str, Any] = {
        "database": "postgresql",
        "seconds": seconds,
        "warmup_seconds": warmup,
        "rounds": rounds,
        "connections": connections,
        "wrk_threads": threads,
        "gunicorn_workers": workers,
        "gunicorn_command": " ".join(gunicorn_command("APP", 0, workers)[1:]).replace(
            ":0", ":PORT"
        ),
        "rate_limits": LIMITS,
        "ratelimit_storage": redis_url,
        "signups_per_domain": SIGNUPS_PER_DOMAIN,
    }
    runs: dict[str, list[dict[str, Any]]] = {"minimal": [], "signup": []}
    timed: dict[str, list[dict[str, Any]]] = {"minimal": [], "signup": []}
    ratios: list[float] = []
    flush(redis_url)
    with database("postgresql", workdir) as url:
        env = server_env(url, redis_url)
        with (
            serve(MINIMAL_APP, env, workers, workdir / "minimal.log") as minimal_url,
            serve(COURSE_APP, env, workers, workdir / "course.log") as course_url,
        ):
            bases = {"minimal": minimal_url, "signup": course_url}

            def sample(kind: str, n: int) -> float:
                base = bases[kind]
                runs[kind].append(wrk(base, script, warmup, connections, threads, f"w{n}"))
                result = wrk(base, script, seconds, connections, threads, f"s{n}")
                runs[kind].append(result)
                timed[kind].append(result)
                return float(result["requests_per_s"])

            before = sample("minimal", 0)
            for r in range(rounds):
                rate = sample("signup", 2 * r + 1)
                after = sample("minimal", 2 * r + 2)
                ratio = rate / ((before + after) / 2)
                ratios.append(ratio)
                log(
                    f"  signup round {r + 1}/{rounds}: signup {rate:.0f} req/s, "
                    f"minimal {before:.0f}/{after:.0f}, ratio {ratio:.2f}"
                )
                before = after
        # Both servers have stopped: every answered signup has been decided.
        found = stored(url)
    hits = limiter_hits(redis_url)
    flush(redis_url)
    minimal = summary(timed["minimal"], runs["minimal"])
    signup = summary(timed["signup"], runs["signup"])
    out["minimal"] = minimal
    out["trivial"] = minimal  # the name bench/run.py's table reads
    out["signup"] = signup
    out["samples"] = {"minimal": timed["minimal"], "signup": timed["signup"]}
    out["ratios"] = ratios
    out["ratio_spread"] = spread(ratios)
    out["ratio"] = out["ratio_spread"]["median"]
    out.update(found)
    out["stored_signups"] = found["subscribers"] + found["undecided_requests"]
    out["lost_signups"] = max(0, signup["ok"] - out["stored_signups"])
    # Requests wrk had sent but not seen answered when it stopped: stored all the same.
    out["stored_beyond_2xx"] = out["stored_signups"] - signup["ok"]
    out["in_flight_bound"] = connections * len(runs["signup"])
    out["limiter_hits"] = hits
    out["checks"] = {
        "every_2xx_stored": out["lost_signups"] == 0,
        "stored_within_in_flight": 0 <= out["stored_beyond_2xx"] <= out["in_flight_bound"],
        "every_new_reader_got_a_confirmation": found["confirmations"] == found["subscribers"],
        "limiter_counted_every_request": all(
            signup["requests"] <= n <= signup["requests"] + out["in_flight_bound"]
            for n in hits.values()
        ),
    }
    if roundtrips:
        from bench.signup_roundtrips import measure

        with database("postgresql", workdir) as url:
            trips = measure(url, redis_url, workdir)
        out["roundtrips"] = {
            "per_signup": trips["per_signup"][0],
            "statements": trips["statements"],
            "round_trips": trips["round_trips"],
            "redis": trips["redis"],
        }
    return out


def report(s: dict[str, Any]) -> str:
    """The result as a few lines of text."""
    m, g, r = s["minimal"], s["signup"], s["ratio_spread"]
    mr, gr = m["requests_per_s_spread"], g["requests_per_s_spread"]
    lines = [
        f"gunicorn {s['gunicorn_command']}; wrk -t{s['wrk_threads']} -c{s['connections']}, "
        f"{s['rounds']} rounds of {s['seconds']} s samples after {s['warmup_seconds']} s warm-ups",
        f"minimal route: median {m['requests_per_s']:.0f} req/s ({mr['min']:.0f}-{mr['max']:.0f}), "
        f"p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, "
        f"{m['non_2xx'] + m['socket_errors']} errors",
        f"signup:        median {g['requests_per_s']:.0f} req/s ({gr['min']:.0f}-{gr['max']:.0f}), "
        f"p50 {g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, "
        f"{g['non_2xx']} non-2xx, {g['socket_errors']} socket errors",
        f"ratio signup/minimal: median {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}); "
        f"per round {', '.join(f'{x:.2f}' for x in s['ratios'])}",
        f"stored: {s['stored_signups']} signups ({s['subscribers']} readers, "
        f"{s['undecided_requests']} undecided, {s['confirmations']} confirmations) for "
        f"{g['ok']} 2xx of {g['requests']} answered requests "
        f"(+{s['stored_beyond_2xx']} in flight, at most {s['in_flight_bound']})",
        f"rate limiter (Redis) counted {s['limiter_hits']['per_client']} per client, "
        f"{s['limiter_hits']['without_origin']} without origin",
        "checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in s["checks"].items()),
    ]
    if "roundtrips" in s:
        c = s["roundtrips"]["per_signup"]
        lines.append(
            "one signup: "
            + "; ".join(
                f"{phase.replace('_', ' ')}: {c[phase]['statements']} statements, "
                f"{c[phase]['round_trips']} round trips to PostgreSQL, "
                f"{c[phase]['redis']} Redis commands"
                for phase in ("request", "after_answer")
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s samples, 3 rounds")
    parser.add_argument("--seconds", type=float, help="timed seconds per sample (default 15)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds (default 2)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--no-roundtrips", action="store_true", help="skip the statement count")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    seconds = args.seconds or (5 if args.quick else 15)
    rounds = args.rounds or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp),
            seconds,
            rounds,
            warmup=args.warmup,
            connections=args.connections,
            workers=args.workers,
            roundtrips=not args.no_roundtrips,
        )
    print(report(result))
    if "roundtrips" in result:
        from bench.signup_roundtrips import PHASES

        t = result["roundtrips"]
        for phase in PHASES:
            print(f"\nround trips, {phase.replace('_', ' ')}:")
            print("\n".join(f"  {x}" for x in t["round_trips"][phase]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
