"""`make bench`: run every benchmark, print one table, save JSON and docs/benchmarks.md.

Each figure is a ratio to a baseline measured in the same run, because absolute times on
a shared machine move from run to run. Sizes can be reduced for a quick look:
`python -m bench.run --quick`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import due_query, memory, rendering, signup, throughput

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"

TARGETS = {
    "throughput_one": 0.6,
    "throughput_pool": 1.5,
    "due_query": 1.3,
    "signup": 0.5,
    "memory": 1.2,
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":")[1].strip()
    except OSError:
        pass
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "postgresql_client": pg,
        "kernel": platform.release(),
    }


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, ratio, target) rows for the table."""
    t, d, s, m, g = r["throughput"], r["due_query"], r["signup"], r["memory"], r["rendering"]
    out = [
        (
            "throughput baseline",
            f"{t['baseline_per_s']:.0f} msg/s (smtplib, built messages)",
            "1.00",
            "",
        ),
    ]
    for kind in ("sqlite", "postgresql"):
        for label, target in (("one", "throughput_one"), ("pool", "throughput_pool")):
            key = f"{kind}_{label}"
            if f"{key}_per_s" in t:
                conns = "1 connection" if label == "one" else f"{t['pool_connections']} connections"
                out.append(
                    (
                        f"throughput {kind}, {conns}",
                        f"{t[key + '_per_s']:.0f} msg/s",
                        f"{t[key + '_ratio']:.2f}",
                        f">= {TARGETS[target]}",
                    )
                )
    out += [
        (
            f"tick, {d['due']} due among {d['small']:,}",
            f"{d['small_tick_s'] * 1000:.0f} ms",
            "1.00",
            "",
        ),
        (
            f"tick, {d['due']} due among {d['large']:,}",
            f"{d['large_tick_s'] * 1000:.0f} ms",
            f"{d['ratio']:.2f}",
            f"<= {TARGETS['due_query']}",
        ),
        (f"idle tick among {d['large']:,}", f"{d['large_idle_tick_s'] * 1000:.1f} ms", "", ""),
        (
            "signup, trivial endpoint",
            f"{s['trivial']['requests_per_s']:.0f} req/s, p50 "
            f"{s['trivial']['p50_ms']:.1f} ms, p99 {s['trivial']['p99_ms']:.1f} ms",
            "1.00",
            "",
        ),
        (
            "signup, POST /subscribe",
            f"{s['signup']['requests_per_s']:.0f} req/s, p50 "
            f"{s['signup']['p50_ms']:.1f} ms, p99 {s['signup']['p99_ms']:.1f} ms, "
            f"{s['signup']['non_2xx'] + s['signup']['socket_errors']} errors, "
            f"{s['stored_signups']} stored for {s['signup']['ok']} 2xx",
            f"{s['ratio']:.2f}",
            f">= {TARGETS['signup']}",
        ),
        (f"memory, {m['small_due']:,} due", f"{m['small_peak_mib']:.0f} MiB peak RSS", "1.00", ""),
        (
            f"memory, {m['large_due']:,} due",
            f"{m['large_peak_mib']:.0f} MiB peak RSS",
            f"{m['ratio']:.2f}",
            f"<= {TARGETS['memory']}",
        ),
        ("render, email package", f"{g['email_package_us']:.0f} us/message", "1.00", ""),
        ("render, course", f"{g['ours_us']:.0f} us/message", f"{g['ratio']:.2f}", ""),
    ]
    return out


def table(lines: list[tuple[str, str, str, str]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    head = ("benchmark", "figure", "ratio", "target")
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(4)]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    out = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    quick = args.quick
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {
            "started": started.isoformat(),
            "quick": quick,
            "machine": machine(),
        }
        print("rendering ...", flush=True)
        results["rendering"] = rendering.run(500 if quick else 3000)
        print("throughput ...", flush=True)
        results["throughput"] = throughput.run(
            work, 2000 if quick else 20000, 4, ["sqlite", "postgresql"]
        )
        print("due query ...", flush=True)
        results["due_query"] = due_query.run(work, 10_000, 50_000 if quick else 1_000_000, 1000)
        print("signup ...", flush=True)
        results["signup"] = signup.run(work, seconds=5 if quick else 15)
        print("memory ...", flush=True)
        results["memory"] = memory.run(work, 1000, 5000 if quick else 100_000)
    results["finished"] = datetime.now(UTC).isoformat()
    text = table(rows(results))
    print()
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick.json" if quick else "latest.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    if not quick:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
        write_doc(results, text)


def write_doc(results: dict[str, Any], text: str) -> None:
    """Put the figures of this run into docs/benchmarks.md between the markers."""
    m = results["machine"]
    block = (
        f"{BEGIN}\n"
        f"Run of {results['started'][:16].replace('T', ' ')} UTC on {m['cpus']} cores "
        f"({m['cpu'] or 'unknown CPU'}), {m['memory']} memory, Python {m['python']}, "
        f"{m['postgresql_client']}.\n\n{text}\n{END}"
    )
    doc = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    DOC.write_text(doc[:start] + block + doc[end:])


if __name__ == "__main__":
    main()
