"""``python -m benchmarks`` (``make bench``): the pipeline (a) against the typical solution (b) and
the DuckDB lower bound (c), scenario by scenario, side by side in one run -> benchmarks/RESULTS.md.

    python -m benchmarks [--scenarios single hourly files typical fixed] [--events 10000000]
        [--files-events 300000] [--files 2000] [--typical-events 1000000] [--partitions 48]
        [--hours 24] [--anomaly-rate 0.001] [--duplicate-rate 0.001] [--seed 42]
        [--memory-limit 1GB] [--max-seconds 1800] [--profile]
        [--work-dir data/output/bench] [--results benchmarks/RESULTS.md] [--render-only]

Scenarios (:mod:`benchmarks.scenarios`; all by default, in this order):

- ``single``: ``--events`` (10M) in ONE file, (a) against (c), which does the same work
  (quarantine with reason codes, de-duplication, Public Suffix List, events, hourly table,
  sessions, the four whole CSV files; see :mod:`benchmarks.duckdb_sql`) with DuckDB's
  memory_limit at ``--memory-limit``. Targets: (a)/(c) <= 1.3, peak RSS of (a) <= 1 GB.
- ``hourly``: the same events split into one file per UTC hour (24), run by (a). Target: no
  slower than the one file.
- ``files``: ``--files-events`` (300k) as one file against the same lines as ``--files`` (2,000)
  files, both by (a). Target: the files take at most 2x the one file; the same tables.
- ``typical``: ``--typical-events`` (1M) in one file by (a), (b) and (c): the typical solution
  only at this size.
- ``fixed``: Dagster's fixed cost per partition, (a) over ``--partitions`` (48) hours of tiny data
  against one hour.

Inputs are generated with ``hipages-pipeline generate`` (``--hours``, ``--anomaly-rate``,
``--duplicate-rate``, ``--seed``) and split into files (:mod:`benchmarks.datasets`); each is
cached in ``--work-dir`` and reused while its spec is unchanged. An implementation runs once per
input per invocation (a scenario reuses another's run of the same input). Each run is measured
(:mod:`benchmarks.harness`): wall time, CPU, peak RSS of its process tree, load; a run past
``--max-seconds`` or 85% of the machine's memory is stopped. After each (a) run its per-step
durations are read from its Dagster instance (:mod:`benchmarks.steps`). Outputs are compared
(:mod:`benchmarks.compare`): event_table, hourly_activity and user_sessions row for row,
rejected_events row for row (without message and time of rejection) and per reason.
``--profile`` adds a py-spy profile of (a) on the ``single`` input (:mod:`benchmarks.pyspy`; one
more run of that size). RESULTS.md is rewritten after every scenario; its section between the
``analysis`` markers is kept. ``--render-only`` rewrites it from ``<work-dir>/report.json``.

A quick end-to-end check of every scenario (about 5 minutes on 2 idle cores, most of it the
2,000 files of 10 lines and Dagster's start-up per run)::

    python -m benchmarks --events 20000 --files-events 20000 --files 2000 --typical-events 20000 \\
        --partitions 4 --work-dir /tmp/bench --results /tmp/bench/RESULTS.md

Exit status 1 when a run failed or two outputs differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import pyspy, report
from benchmarks.datasets import START
from benchmarks.implementations import PROJECT, Runner, ok
from benchmarks.scenarios import RUNNERS, SCENARIOS, fixed_cost


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to run (default: all)")
    add("--events", type=int, default=10_000_000, help="lines of single and hourly (default %(default)s)")
    add("--files-events", type=int, default=300_000, help="lines of files (default %(default)s)")
    add("--files", type=int, default=2000, help="number of files in files (default %(default)s)")
    add("--typical-events", type=int, default=1_000_000, help="lines of typical (default %(default)s)")
    add("--partitions", type=int, default=48, help="hours of tiny data in fixed (default %(default)s)")
    add("--hours", type=int, default=24, help="hours the generated events span (default %(default)s)")
    add("--anomaly-rate", type=float, default=0.001, help="share of corrupt lines (default %(default)s)")
    add("--duplicate-rate", type=float, default=0.001, help="share of retried lines (default %(default)s)")
    add("--seed", type=int, default=42)
    add("--memory-limit", default="1GB", help="DuckDB memory_limit of (c) (default %(default)s)")
    add("--max-seconds", type=float, default=1800.0, help="stop a run after this long (default %(default)s)")
    add("--profile", action="store_true", help="also profile (a) with py-spy on the single input")
    add("--work-dir", type=Path, default=PROJECT / "data" / "output" / "bench",
        help="inputs, outputs, logs, report.json (git-ignored; default %(default)s)")
    add("--results", type=Path, default=PROJECT / "benchmarks" / "RESULTS.md")
    add("--render-only", action="store_true", help="only rewrite --results from <work-dir>/report.json")
    return parser


def _write(args: argparse.Namespace, result: dict, began: float) -> None:
    result["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["total_seconds"] = time.monotonic() - began
    (args.work_dir / "report.json").write_text(json.dumps(result, indent=2, default=str))
    args.results.write_text(report.render(result, report.previous_analysis(args.results)))


def _failed(result: dict) -> bool:
    runs = [r for s in result["scenarios"] for r in s["runs"]]
    return not all(ok(r) for r in runs) or not all(c["same"] for s in result["scenarios"] for c in s["comparisons"])


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and write RESULTS.md; 1 when a run failed or outputs differ."""
    args = _parser().parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        saved = json.loads((args.work_dir / "report.json").read_text())
        args.results.write_text(report.render(saved, report.previous_analysis(args.results)))
        print(f"wrote {args.results}", file=sys.stderr)
        return 0
    began = time.monotonic()
    runner = Runner(args.work_dir, args.max_seconds, args.memory_limit)
    result: dict = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "machine": report.machine(),
                    "versions": report.versions(), "memory_limit": args.memory_limit, "scenarios": [],
                    "data": {"hours": args.hours, "anomaly_rate": args.anomaly_rate, "start": START,
                             "duplicate_rate": args.duplicate_rate, "seed": args.seed}}
    for name in (s for s in SCENARIOS if s in args.scenarios and s in RUNNERS):
        print(f"== {name} ({time.monotonic() - began:.0f} s so far)", file=sys.stderr)
        result["scenarios"].append(RUNNERS[name](args, runner))
        _write(args, result, began)
    if "fixed" in args.scenarios and args.partitions > 0:
        print(f"== fixed: {args.partitions} partitions", file=sys.stderr)
        result["fixed_cost"] = fixed_cost(args, runner)
    if args.profile:
        print(f"== profile of (a) on {args.events:,} events", file=sys.stderr)
        result["profile"] = pyspy.profile(args.work_dir, args.work_dir / f"events_{args.events}.json",
                                          f"{args.events:,} events")
    _write(args, result, began)
    print(f"wrote {args.results} ({result['total_seconds'] / 60:.1f} min)", file=sys.stderr)
    return 1 if _failed(result) else 0


if __name__ == "__main__":
    sys.exit(main())
