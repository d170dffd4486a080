"""`make bench`: run every benchmark, print one table, save JSON and docs/benchmarks.md.

Each figure is a ratio to a baseline measured in the same run, because absolute times on
a shared machine move from run to run; the throughput figures are medians over interleaved
rounds with their spread (bench/throughput.py says how). Sizes can be reduced for a quick
look: `python -m bench.run --quick`; `--only throughput` runs one benchmark; `--pin` runs
the throughput rounds with the senders and the sink pinned to CPUs of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import due_query, memory, rendering, signup, throughput

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
BENCHMARKS = ("rendering", "throughput", "due_query", "signup", "memory")

#: Targets of the throughput variants (bench.throughput.VARIANTS), as ratios to raw smtplib.
THROUGHPUT_TARGETS = {"sqlite_1": 0.6, "postgresql_1": 0.6, "postgresql_2proc": 1.0}
TARGETS = {
    "course_vs_post_office": 2.0,
    "due_query": 1.3,
    "signup": 0.25,
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


Row = tuple[str, str, str, str]


def throughput_rows(t: dict[str, Any]) -> list[Row]:
    """Per mode: raw smtplib's median, then each variant's median rate and ratio."""
    out: list[Row] = []
    for mode, m in t["modes"].items():
        raw = m["raw_per_s"]
        out.append(
            (
                f"throughput [{mode}] raw smtplib",
                f"median {raw['median']:.0f} msg/s ({raw['min']:.0f}-{raw['max']:.0f}, "
                f"{len(m['raw_samples'])} samples)",
                "1.00",
                "",
            )
        )
        for key, v in m["variants"].items():
            rate, ratio = v["per_s"], v["ratio"]
            target = THROUGHPUT_TARGETS.get(key)
            out.append(
                (
                    f"throughput [{mode}] {v['label']}",
                    f"median {rate['median']:.0f} msg/s ({rate['min']:.0f}-{rate['max']:.0f})",
                    f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})",
                    f">= {target}" if target is not None else "",
                )
            )
        vs = m.get("postgresql_1_vs_post_office")
        if vs is not None:
            out.append(
                (
                    f"throughput [{mode}] course PostgreSQL 1 conn / post_office",
                    "same rounds",
                    f"{vs['median']:.2f} ({vs['min']:.2f}-{vs['max']:.2f})",
                    f">= {TARGETS['course_vs_post_office']}",
                )
            )
    if not str(t.get("peer", "")).startswith("django-post_office"):
        out.append(("throughput peer row", str(t.get("peer", "")), "", ""))
    return out


def throughput_note(t: dict[str, Any]) -> str:
    """One line on how the throughput rows were made."""
    if "error" in t:
        return "Throughput failed."
    return (
        f"Throughput: {t['messages']:,} messages of {t['message_bytes']:,} bytes per sample, "
        f"{t['rounds']} interleaved rounds per mode ({', '.join(t['modes'])}); a rate or "
        f"ratio is the median over the rounds, with the lowest and highest in brackets. "
        f"Peer: {t['peer']}."
    )


def due_query_rows(d: dict[str, Any]) -> list[Row]:
    return [
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
    ]


def signup_rows(s: dict[str, Any]) -> list[Row]:
    spread = s["ratio_spread"]
    rows: list[Row] = [
        (
            "signup baseline: minimal Flask route",
            f"median {s['minimal']['requests_per_s']:.0f} req/s, p50 "
            f"{s['minimal']['p50_ms']:.1f} ms, p99 {s['minimal']['p99_ms']:.1f} ms",
            "1.00",
            "",
        ),
        (
            "signup, POST /subscribe (Redis limiter on)",
            f"median {s['signup']['requests_per_s']:.0f} req/s, p50 "
            f"{s['signup']['p50_ms']:.1f} ms, p99 {s['signup']['p99_ms']:.1f} ms, "
            f"{s['signup']['non_2xx'] + s['signup']['socket_errors']} errors, "
            f"{s['stored_signups']} stored for {s['signup']['ok']} 2xx",
            f"{spread['median']:.3f} ({spread['min']:.3f}-{spread['max']:.3f})",
            f">= {TARGETS['signup']}",
        ),
    ]
    trips = s.get("roundtrips")
    if isinstance(trips, dict) and "per_signup" in trips:
        first = trips["per_signup"]
        rows.append(
            (
                "signup: database round trips",
                " + ".join(f"{phase} {c['round_trips']}" for phase, c in first.items()),
                "",
                "",
            )
        )
    return rows


def memory_rows(m: dict[str, Any]) -> list[Row]:
    return [
        (f"memory, {m['small_due']:,} due", f"{m['small_peak_mib']:.0f} MiB peak RSS", "1.00", ""),
        (
            f"memory, {m['large_due']:,} due",
            f"{m['large_peak_mib']:.0f} MiB peak RSS",
            f"{m['ratio']:.2f}",
            f"<= {TARGETS['memory']}",
        ),
    ]


def rendering_rows(g: dict[str, Any]) -> list[Row]:
    return [
        ("render, email package", f"{g['email_package_us']:.0f} us/message", "1.00", ""),
        ("render, course", f"{g['ours_us']:.0f} us/message", f"{g['ratio']:.2f}", ""),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "throughput": throughput_rows,
    "due_query": due_query_rows,
    "signup": signup_rows,
    "memory": memory_rows,
    "rendering": rendering_rows,
}


def rows(r: dict[str, Any]) -> list[Row]:
    """(benchmark, figure, ratio, target) rows for the table, in the order run."""
    out: list[Row] = []
    for name in BENCHMARKS:
        if name not in r:
            continue
        if "error" in r[name]:
            out.append((name, f"FAILED: {r[name]['error']}", "", ""))
        else:
            out += ROWS[name](r[name])
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
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (of {','.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--mode",
        choices=("natural", "pinned", "both"),
        help="throughput: let the kernel place the processes (natural), pin the senders to "
        "CPU 0 and the sink to CPU 1 (pinned), or both in turn "
        "(default: both, or natural with --quick)",
    )
    parser.add_argument("--pin", action="store_true", help="the same as --mode pinned")
    parser.add_argument(
        "--rounds", type=int, help="throughput rounds per mode (default 5, 3 with --quick)"
    )
    parser.add_argument(
        "--messages",
        type=int,
        help="throughput messages per sample (default 5000, 2000 with --quick)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    quick = args.quick
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.pin and args.mode not in (None, "pinned"):
        parser.error("--pin and --mode disagree")
    mode = "pinned" if args.pin else args.mode or ("natural" if quick else "both")
    modes = ("natural", "pinned") if mode == "both" else (mode,)
    rounds = args.rounds or (3 if quick else 5)
    messages = args.messages or (2000 if quick else 5000)
    started = datetime.now(UTC)
    runs: dict[str, Callable[[Path], dict[str, Any]]] = {
        "rendering": lambda work: rendering.run(500 if quick else 3000),
        "throughput": lambda work: throughput.run(
            work, messages, rounds, modes, log=lambda line: print(line, flush=True)
        ),
        "due_query": lambda work: due_query.run(work, 10_000, 50_000 if quick else 1_000_000, 1000),
        "signup": lambda work: signup.run(
            work, seconds=5 if quick else 15, rounds=3 if quick else 5
        ),
        "memory": lambda work: memory.run(work, 1000, 5000 if quick else 100_000),
    }
    results: dict[str, Any] = {
        "started": started.isoformat(),
        "quick": quick,
        "machine": machine(),
    }
    failed = []
    for name in BENCHMARKS:
        if name not in only:
            continue
        print(f"{name} ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                results[name] = runs[name](Path(tmp))
            except Exception as exc:  # report it and go on with the others
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                failed.append(name)
    results["finished"] = datetime.now(UTC).isoformat()
    text = table(rows(results))
    print()
    if "throughput" in results:
        print(throughput_note(results["throughput"]))
    print(text)
    dump = json.dumps(results, indent=2) + "\n"
    if args.json:
        args.json.write_text(dump)
    complete = set(only) == set(BENCHMARKS) and args.rounds is None and args.messages is None
    RESULTS.mkdir(parents=True, exist_ok=True)
    if quick:
        (RESULTS / "quick.json").write_text(dump)
    elif complete and not failed:
        # Only a full, default run of everything goes to bench/results and the docs.
        (RESULTS / "latest.json").write_text(dump)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        (RESULTS / f"{stamp}.json").write_text(dump)
        write_doc(results, text)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def write_doc(results: dict[str, Any], text: str) -> None:
    """Put the figures of this run into docs/benchmarks.md between the markers."""
    m = results["machine"]
    block = (
        f"{BEGIN}\n"
        f"Run of {results['started'][:16].replace('T', ' ')} UTC on {m['cpus']} cores "
        f"({m['cpu'] or 'unknown CPU'}), {m['memory']} memory, Python {m['python']}, "
        f"{m['postgresql_client']}. {throughput_note(results['throughput'])}\n\n{text}\n{END}"
    )
    doc = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    DOC.write_text(doc[:start] + block + doc[end:])


if __name__ == "__main__":
    main()
