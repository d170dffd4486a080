"""Peak memory of a sender process: 100,000 due must not cost much more than 1,000."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import course_env, database, seed, smtp_sink

COURSE = str(Path(sys.executable).parent / "course")


def peak_rss_mib(url: str, port: int) -> float:
    """Run `course send-due` (one full pass) and return the child's peak RSS in MiB."""
    env = course_env(url, f"smtp://127.0.0.1:{port}")
    # A fresh child each time, so RUSAGE_CHILDREN's maximum is this child's.
    code = (
        "import resource, subprocess, sys;"
        f"r = subprocess.run([{COURSE!r}, 'send-due'], capture_output=True);"
        "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss));"
        "sys.exit(r.returncode)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # ru_maxrss is in KiB on Linux.
    return int(done.stdout) / 1024


def run(workdir: Path, small: int, large: int, kind: str = "postgresql") -> dict[str, Any]:
    """Peak RSS with ``small`` due and with ``large`` due, and their ratio."""
    out: dict[str, Any] = {"database": kind, "small_due": small, "large_due": large}
    with smtp_sink() as port:
        for label, due in (("small", small), ("large", large)):
            with database(kind, workdir) as url:
                seed(url, due, due)
                out[f"{label}_peak_mib"] = peak_rss_mib(url, port)
    out["ratio"] = out["large_peak_mib"] / out["small_peak_mib"]
    return out
