"""The scenarios of ``python -m benchmarks``: what runs side by side, and the target each must meet.

``single``   ``--events`` in ONE file: (a) against (c), which does the same work; targets
             (a)/(c) <= 1.3 and peak RSS of (a) <= 1 GB. All four CSV files compared.
``hourly``   the same events split into one file per UTC hour (24 files), run by (a); target: no
             slower than the one file. Tables compared with (a)'s one-file run.
``files``    ``--files-events`` as one file against the same lines as ``--files`` files (150 lines
             each by default: "one a minute from the receiver"), both run by (a); target: the many
             files take at most 2x the one file, and the tables are the same.
``typical``  ``--typical-events`` in one file: (a), (b) and (c); the typical solution only at this
             small size (it is slow and holds everything in memory). (a)/(b) <= 0.33 is reported.
``fixed``    Dagster's fixed cost per partition: (a) over ``--partitions`` hours of tiny data (one
             ranged run) against one hour (see :func:`fixed_cost`).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from benchmarks import datasets
from benchmarks.compare import TABLES, compare_outputs
from benchmarks.implementations import Runner, ok

SCENARIOS = ("single", "hourly", "files", "typical", "fixed")
GB = 10**9


def _generate(args: argparse.Namespace, events: int) -> tuple[Path, float, dict]:
    path, seconds, spec = datasets.generate(args.work_dir, events, args.hours, args.anomaly_rate,
                                            args.duplicate_rate, args.seed)
    print(f"   input: {path.name} ({path.stat().st_size / 1e9:.2f} GB; made in {seconds:.1f} s)", file=sys.stderr)
    return path, seconds, spec


def _entry(key: str, source: Path, events: int, result: dict) -> dict:
    files, size = datasets.size_of(source)
    return {"implementation": key, "events": events, "files": files, "bytes": size, **result}


def _target(what: str, limit: float, value: float | None, unit: str = "") -> dict:
    """A target ``value <= limit``; ``value`` None when a run it needs failed."""
    shown = "-" if value is None else (f"{value / GB:.2f} GB" if unit == "GB" else f"{value:.2f}")
    wanted = f"<= {limit / GB:.0f} GB" if unit == "GB" else f"<= {limit:g}"
    return {"what": what, "target": wanted, "measured": shown, "met": None if value is None else value <= limit}


def _ratio(left: dict, right: dict) -> float | None:
    return left["wall_seconds"] / right["wall_seconds"] if ok(left) and ok(right) and right["wall_seconds"] else None


def _compare(left: tuple[str, dict], right: tuple[str, dict], lineage: bool,
             tables: tuple[str, ...] = TABLES) -> list[dict]:
    """Both runs' CSV files compared (nothing when one of them failed)."""
    if not (ok(left[1]) and ok(right[1])):
        return []
    began = time.monotonic()
    comparisons = compare_outputs((left[0], Path(left[1]["extra"]["output"])),
                                  (right[0], Path(right[1]["extra"]["output"])), lineage=lineage, tables=tables)
    print(f"   {left[0]} vs {right[0]}: " + ", ".join(f"{c.table} {'same' if c.same else 'DIFFERENT'}"
                                                    for c in comparisons)
          + f" ({time.monotonic() - began:.1f} s)", file=sys.stderr)
    return [{**c.__dict__, "same": c.same} for c in comparisons]


def single(args: argparse.Namespace, runner: Runner) -> dict:
    """``--events`` in one file: (a) against (c)."""
    source, seconds, _ = _generate(args, args.events)
    a = runner.run("a", source, f"single_{args.events}")
    c = runner.run("c", source, f"single_{args.events}")
    return {"id": "single", "title": f"{args.events:,} events in one file: (a) against (c)",
            "notes": [f"generated in {seconds:.1f} s"],
            "runs": [_entry("a", source, args.events, a), _entry("c", source, args.events, c)],
            "targets": [_target("wall time (a)/(c)", 1.3, _ratio(a, c)),
                        _target("peak RSS of (a)", GB, a["peak_rss_bytes"] if ok(a) else None, "GB")],
            "comparisons": _compare(("(a)", a), ("(c)", c), lineage=True)}


def hourly(args: argparse.Namespace, runner: Runner) -> dict:
    """The same events as one file per UTC hour, by (a); against (a) on the one file."""
    source, seconds, spec = _generate(args, args.events)
    directory, split_seconds = datasets.split_by_hour(source, spec)
    one = runner.run("a", source, f"single_{args.events}")
    many = runner.run("a", directory, f"hourly_{args.events}")
    files = datasets.size_of(directory)[0]
    return {"id": "hourly", "title": f"{args.events:,} events in {files} hourly files against one file, both by (a)",
            "notes": [f"split by the events' UTC hour in {split_seconds:.1f} s (a corrupt line without an hour "
                      "stays with the line before it)"],
            "runs": [_entry("a", source, args.events, one), _entry("a", directory, args.events, many)],
            "targets": [_target(f"wall time {files} files / 1 file", 1.0, _ratio(many, one))],
            "comparisons": _compare(("(a) 1 file", one), (f"(a) {files} files", many), lineage=False)}


def files(args: argparse.Namespace, runner: Runner) -> dict:
    """``--files-events`` as one file against ``--files`` files, by (a)."""
    source, seconds, spec = _generate(args, args.files_events)
    directory, split_seconds = datasets.split_into_files(source, spec, args.files)
    one = runner.run("a", source, f"single_{args.files_events}")
    many = runner.run("a", directory, f"files_{args.files_events}_{args.files}")
    count = datasets.size_of(directory)[0]
    per_file = -(-args.files_events // args.files)
    return {"id": "files", "title": f"{args.files_events:,} events in one file against {count:,} files "
                                    f"({per_file:,} lines each), both by (a)",
            "notes": [f"generated in {seconds:.1f} s, split in {split_seconds:.1f} s"],
            "runs": [_entry("a", source, args.files_events, one), _entry("a", directory, args.files_events, many)],
            "targets": [_target(f"wall time {count:,} files / 1 file", 2.0, _ratio(many, one))],
            "comparisons": _compare(("(a) 1 file", one), (f"(a) {count:,} files", many), lineage=False)}


def typical(args: argparse.Namespace, runner: Runner) -> dict:
    """``--typical-events`` in one file: (a), (b) and (c)."""
    source, seconds, _ = _generate(args, args.typical_events)
    name = f"single_{args.typical_events}"
    a, b, c = (runner.run(key, source, name) for key in "abc")
    return {"id": "typical", "title": f"{args.typical_events:,} events in one file: (a), (b) and (c)",
            "notes": [f"generated in {seconds:.1f} s; (b) writes event_table.csv and hourly_activity.csv only"],
            "runs": [_entry(key, source, args.typical_events, r) for key, r in zip("abc", (a, b, c))],
            "targets": [_target("wall time (a)/(b)", 0.33, _ratio(a, b)),
                        _target("wall time (a)/(c)", 1.3, _ratio(a, c))],
            "comparisons": _compare(("(a)", a), ("(b)", b), True, ("event_table", "hourly_activity"))
            + _compare(("(a)", a), ("(c)", c), lineage=True)}


def fixed_cost(args: argparse.Namespace, runner: Runner) -> dict:
    """Dagster's fixed cost per partition: (a) over N hours of tiny data (20 events an hour, every
    hour has data, so one ranged run of N partitions) against the same over 1 hour; job time = the
    runner's ``ok in ... s`` of the ranged run."""
    per_hour, runs = 20, {}
    for hours in (1, args.partitions):
        path, _, _ = datasets.generate(args.work_dir / f"tiny_{hours}h", per_hour * hours, hours, 0.0, 0.0, args.seed)
        result = runner.run("a", path, f"tiny_{hours}h", extra=["--max-hours-per-run", str(hours)])
        seconds = [float(s) for s in re.findall(r"ok in ([0-9.]+) s", Path(result["extra"]["log"]).read_text())]
        runs[str(hours)] = {"wall": result["wall_seconds"], "run": sum(seconds), "runs": len(seconds),
                            "ok": ok(result), "events": per_hour * hours}
    n = args.partitions
    per_partition = (runs[str(n)]["run"] - runs["1"]["run"]) / (n - 1) if n > 1 else runs[str(n)]["run"]
    steps = result["extra"].get("steps", {}).get("steps", {})  # of the N-hour run
    partitioned = sorted(name for name in steps if not name.startswith("whole_") and name != "rejected_without_hour")
    return {"partitions": n, "runs": runs, "ms_per_partition": 1000 * per_partition, "steps": partitioned,
            "ms_per_partition_per_step": 1000 * per_partition / max(len(partitioned), 1)}


RUNNERS = {"single": single, "hourly": hourly, "files": files, "typical": typical}
