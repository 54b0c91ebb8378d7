"""The ``hipages-pipeline`` command.

    hipages-pipeline run [--source GLOB] [--output-dir DIR] [--timezone TZ]

Exit status: 0 when every run succeeded and every line is accounted for; 1 when the pipeline
failed (the reason is printed); 2 on a usage or configuration error (no source file, unknown
time zone).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from dagster import DagsterInstance, Failure

from hipages_pipeline.resources import DEFAULT_OUTPUT_DIR, DEFAULT_SOURCE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipages-pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="materialize every hour present in the source and write the whole tables",
        description="Materialize every hour present in the source (contiguous hours as one ranged "
        "run), then write event_table.csv, hourly_activity.csv and rejected_events.csv.")
    run.add_argument("--source", default=os.environ.get("HIPAGES_SOURCE", DEFAULT_SOURCE),
                     help="glob of JSON Lines files, .gz allowed (env HIPAGES_SOURCE; default %(default)s)")
    run.add_argument("--output-dir", default=os.environ.get("HIPAGES_OUTPUT_DIR", DEFAULT_OUTPUT_DIR),
                     help="output directory (env HIPAGES_OUTPUT_DIR; default %(default)s)")
    run.add_argument("--timezone", default=os.environ.get("HIPAGES_SOURCE_TIMEZONE", "UTC"),
                     help="IANA time zone of the source timestamps (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="dagster")  # beta/preview notices are not for operators
    from hipages_pipeline.resources import EventSource
    from hipages_pipeline.runner import PipelineError, run_pipeline

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    try:
        summary = run_pipeline(EventSource(source_glob=args.source, source_timezone=args.timezone),
                               args.output_dir, instance=instance)
    except Failure as exc:
        print(f"hipages-pipeline: {exc.description}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"hipages-pipeline: {exc}", file=sys.stderr)
        return 1
    print(summary.render())
    if not summary.ok:
        print("hipages-pipeline: the pipeline failed (see FAILED above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
