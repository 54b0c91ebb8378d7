"""The hipages-pipeline command.

    hipages-pipeline run [--source GLOB] [--output-dir DIR] [--timezone TZ] [--max-hours-per-run N]
                         [--memory-limit 1GB] [--threads 2] [--storage duckdb|delta] [--lake-uri URI]
                         [--workers N] [--rebuild]
    hipages-pipeline land [the same options]   (land new or changed files only)
    hipages-pipeline generate --events N [--start 2017-02-02T00:00] [--hours H]
                              [--anomaly-rate R] [--duplicate-rate D] [--seed S] --out FILE
    hipages-pipeline sql "QUERY" [--output-dir DIR] [--storage duckdb|delta] [--lake-uri URI] [--wait SECONDS]

Exit status: 0 when every run succeeded and every line is accounted for, unless every line was
quarantined (an empty source is fine); 1 when the pipeline failed or every line was quarantined
(the reason is printed; an OS error such as a full disk is one line naming the path and the
cause, never a traceback); 2 on a usage or configuration error (no source file, unknown time
zone, unwritable output directory); 130 when interrupted. A run waits while another process (a
run, a reader) holds the database, up to HIPAGES_DUCKDB_LOCK_WAIT_SECONDS (default 600), then
fails with status 1 and one line. ``sql``'s statuses: see :mod:`hipages_pipeline.cli.sql`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from datetime import datetime

from dagster import DagsterInstance, Failure

from hipages_pipeline.cli.sql import add_sql, add_storage_options, run_sql
from hipages_pipeline.defs.resources import DEFAULT_OUTPUT_DIR, DEFAULT_SOURCE
from hipages_pipeline.lib.storage.duckdb_files import DatabaseLockedError


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--source", default=os.environ.get("HIPAGES_SOURCE", DEFAULT_SOURCE),
                     help="glob of JSON Lines files, .gz allowed (env HIPAGES_SOURCE; default %(default)s)")
    run.add_argument("--output-dir", default=os.environ.get("HIPAGES_OUTPUT_DIR", DEFAULT_OUTPUT_DIR),
                     help="output directory (env HIPAGES_OUTPUT_DIR; default %(default)s)")
    run.add_argument("--timezone", default=os.environ.get("HIPAGES_SOURCE_TIMEZONE", "UTC"),
                     help="IANA time zone of the source timestamps (default %(default)s)")
    run.add_argument("--max-hours-per-run", type=_positive_int, default=24, metavar="N",
                     help="partition cap: hours per ranged run (default %(default)s)")
    run.add_argument("--memory-limit", default=None, metavar="SIZE",
                     help="DuckDB's memory limit, e.g. 1GB; past it DuckDB spills to disk "
                     "(env HIPAGES_DUCKDB_MEMORY_LIMIT; default 1GB)")
    run.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                     help="DuckDB's threads (env HIPAGES_DUCKDB_THREADS; default 2)")
    add_storage_options(run)
    run.add_argument("--workers", type=_positive_int, default=os.environ.get("HIPAGES_WORKERS") or "1",
                     metavar="N", help="N > 1: the hourly runs go through a Dagster run queue, each its own process, "
                     "at most N at once (one at a time on DuckDB storage); default 1: in this process "
                     "(env HIPAGES_WORKERS)")
    run.add_argument("--rebuild", action="store_true",
                     help="when the output directory's tables were computed in another --timezone, drop "
                     "them and compute again (without it such a run is refused)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipages-pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="land new or changed source files, build the hours they touch, write the whole tables",
        description="Land the source files that are new or changed (each read once), materialize the hours "
        "their lines fall in (contiguous hours as one ranged run), then write event_table.csv, "
        "hourly_activity.csv, user_sessions.csv and rejected_events.csv. With nothing new, does nothing.")
    land = commands.add_parser(
        "land", help="only land new or changed source files (what the landing-files sensor does)",
        description="Land the source files that are new or changed since they were landed, and say which "
        "hours are still to build (hipages-pipeline run, or hipages_etl_job for those hours).")
    for command in (run, land):
        _add_run_options(command)
    _add_generate(commands)
    add_sql(commands, DEFAULT_OUTPUT_DIR)
    return parser


def _add_generate(commands) -> None:
    """The ``generate`` subcommand: synthetic events in the sample's exact line format."""
    generate = commands.add_parser(
        "generate", help="write synthetic events in the sample's line format (benchmarks, tests)",
        description="Write N synthetic events in the exact line format of the sample, distributed "
        "like it (about 30 events per user per day, the sample's URL and IP anomalies), with corrupt "
        "lines at the given rate. The same arguments give the same bytes.")
    generate.add_argument("--events", type=int, required=True, help="number of lines to write")
    generate.add_argument("--start", type=datetime.fromisoformat, default=datetime(2017, 2, 2),
                          help="first second of the time range, ISO 8601 (default 2017-02-02T00:00)")
    generate.add_argument("--hours", type=int, default=24, help="length of the time range (default %(default)s)")
    generate.add_argument("--anomaly-rate", type=float, default=0.001,
                          help="share of lines that are corrupt (quarantined) lines (default %(default)s)")
    generate.add_argument("--duplicate-rate", type=float, default=0.0,
                          help="share of lines that are retries of another event (default %(default)s)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    generate.add_argument("--out", required=True, help="output file; gzip when it ends in .gz")


def _generate(args: argparse.Namespace) -> int:
    """Run ``hipages-pipeline generate``; returns the exit status."""
    import time

    from hipages_pipeline.lib.generator import GeneratorSpec, generate

    try:
        spec = GeneratorSpec(events=args.events, start=args.start, hours=args.hours,
                             anomaly_rate=args.anomaly_rate, duplicate_rate=args.duplicate_rate, seed=args.seed)
    except ValueError as exc:
        print(f"hipages-pipeline generate: {exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    path = generate(spec, args.out)
    print(f"wrote {spec.events} lines ({spec.corrupt_lines} corrupt, {spec.duplicate_lines} duplicates, "
          f"{spec.users} users) to {path} in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    if args.command == "sql":
        try:
            return run_sql(args)
        except KeyboardInterrupt:
            print("hipages-pipeline sql: interrupted", file=sys.stderr)
            return 130
    warnings.filterwarnings("ignore", module="dagster")  # beta/preview notices are not for operators
    # The code location reads the storage when it loads (its jobs' run tags): the options win.
    for name, value in (("HIPAGES_STORAGE", args.storage), ("HIPAGES_LAKE_URI", args.lake_uri)):
        if value:
            os.environ[name] = value
    from hipages_pipeline.cli.runner import (
        ConfigurationError,
        PipelineError,
        run_pipeline,
    )
    from hipages_pipeline.defs.resources import EventSource

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    try:
        summary = run_pipeline(EventSource(source_glob=args.source, source_timezone=args.timezone),
                               args.output_dir, instance=instance, max_hours_per_run=args.max_hours_per_run,
                               memory_limit=args.memory_limit, threads=args.threads, rebuild=args.rebuild,
                               land_only=args.command == "land", storage=args.storage, lake_uri=args.lake_uri,
                               workers=args.workers if args.command == "run" else 1)
    except (Failure, ConfigurationError) as exc:  # configuration: source, time zone, output dir
        print(f"hipages-pipeline: {getattr(exc, 'description', None) or exc}", file=sys.stderr)
        return 2
    except (PipelineError, DatabaseLockedError) as exc:  # locked: before any run, past the lock wait
        print(f"hipages-pipeline: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # outside any run (e.g. listing the source): the path and the cause
        print(f"hipages-pipeline: {exc.filename or args.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"hipages-pipeline: {str(exc) or 'interrupted'}; the hours done so far are stored", file=sys.stderr)
        return 130
    print(summary.render())
    if summary.failed_runs:
        cause = f"{summary.fault}; " if summary.fault else ""
        print(f"hipages-pipeline: {cause}the pipeline failed: {'; '.join(summary.failed_runs)}", file=sys.stderr)
        return 1
    if not summary.ok:
        if not summary.accounted and summary.source_changed:
            reason = summary.changed_text
        else:
            reason = "the pipeline did not account for every line, or quarantined every line"
        print(f"hipages-pipeline: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
