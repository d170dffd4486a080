"""Signup under load: gunicorn with the production settings, wrk on loopback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from sqlalchemy import create_engine, func, select

from bench.common import SECRET, database, free_port
from course.models import Subscriber

GUNICORN = str(Path(sys.executable).parent / "gunicorn")

# Each request signs up a new address: thread id and a counter make it unique. The
# script also counts 2xx answers so they can be compared with what was stored.
SIGNUP_LUA = r"""
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end
function init(args)
  ok = 0
  bad = 0
end
function request()
  counter = counter + 1
  local body = string.format('{"email": "load-%d-%d@example.com", "name": "Load"}', tid, counter)
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
  io.write(string.format("COUNTS ok=%d bad=%d\n", total_ok, total_bad))
  io.write(string.format("LATENCY p50=%d p99=%d\n", latency:percentile(50), latency:percentile(99)))
end
"""

_SIGNUP_REQUEST = (
    "  local body = string.format("
    '\'{"email": "load-%d-%d@example.com", "name": "Load"}\', tid, counter)\n'
    '  return wrk.format("POST", "/subscribe", {["Content-Type"] = "application/json"}, body)'
)
TRIVIAL_LUA = SIGNUP_LUA.replace(
    _SIGNUP_REQUEST, '  return wrk.format("GET", "/static/timezone.js")'
)
assert TRIVIAL_LUA != SIGNUP_LUA


def _wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: install Debian's wrk package (`apt-get install -y wrk`).")
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    counts = re.search(r"COUNTS ok=(\d+) bad=(\d+)", out)
    latency = re.search(r"LATENCY p50=(\d+) p99=(\d+)", out)
    assert counts and latency, out
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": rps,
        "ok": int(counts.group(1)),
        "non_2xx": int(counts.group(2)),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "p50_ms": int(latency.group(1)) / 1000,
        "p99_ms": int(latency.group(2)) / 1000,
    }


def run(
    workdir: Path,
    seconds: int = 10,
    connections: int = 16,
    workers: int = 4,
    kind: str = "postgresql",
) -> dict[str, Any]:
    """Signup and a trivial endpoint under the same load; stored signups against 2xx."""
    out: dict[str, Any] = {
        "database": kind,
        "seconds": seconds,
        "connections": connections,
        "gunicorn_workers": workers,
    }
    (workdir / "signup.lua").write_text(SIGNUP_LUA)
    (workdir / "trivial.lua").write_text(TRIVIAL_LUA)
    with database(kind, workdir) as url:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
        env.update(
            COURSE_DATABASE_URL=url,
            COURSE_SECRET_KEY=SECRET,
            COURSE_BASE_URL="https://course.example.org",
            COURSE_MAIL_URL="outbox:" + str(workdir / "outbox"),
            # The load comes from one address; per-address limits would (rightly) refuse
            # almost all of it. This measures the signup path itself.
            COURSE_RATELIMIT_ENABLED="false",
        )
        server = subprocess.Popen(
            [
                GUNICORN,
                "--workers",
                str(workers),
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "wsgi:app",
            ],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urlopen(f"http://127.0.0.1:{port}/static/timezone.js", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            base = f"http://127.0.0.1:{port}"
            out["trivial"] = _wrk(base, workdir / "trivial.lua", seconds, connections)
            out["signup"] = _wrk(base, workdir / "signup.lua", seconds, connections)
        finally:
            server.terminate()
            server.wait(timeout=30)
        engine = create_engine(url)
        with engine.connect() as conn:
            out["stored_signups"] = int(conn.scalar(select(func.count()).select_from(Subscriber)))
        engine.dispose()
    out["lost_signups"] = out["signup"]["ok"] - out["stored_signups"]
    out["ratio"] = out["signup"]["requests_per_s"] / out["trivial"]["requests_per_s"]
    return out
