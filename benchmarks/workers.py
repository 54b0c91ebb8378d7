"""Parallel runs side by side: 12 hourly files through ``hipages-pipeline run --workers N`` with
N = 1, 2, 4, on the ``duckdb`` and the ``delta`` (local folder) storages.

    python -m benchmarks.workers [--events-per-hour 100000] [--out benchmarks/WORKERS.md]

Each configuration starts from an empty output directory (and lake); the source files are
generated once (``hipages_pipeline.lib.generator``, seed = the hour). Runs are ranged by one hour
(``--max-hours-per-run 1``: 12 runs) so that N workers have runs to share. The table gives the
wall time of the whole command (landing, the 12 hourly runs, the whole-table CSV files) and of
its landing run (from its progress line), with the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from hipages_pipeline.lib.generator import GeneratorSpec, generate

HOURS = 12
WORKERS = (1, 2, 4)
FIRST_HOUR = datetime(2017, 3, 1)


def _sources(directory: Path, events_per_hour: int) -> str:
    for hour in range(HOURS):
        spec = GeneratorSpec(events=events_per_hour, start=FIRST_HOUR + timedelta(hours=hour), hours=1, seed=hour)
        generate(spec, str(directory / f"events-{hour:02d}.json"))
    return str(directory / "*.json")


def _one(source: str, root: Path, storage: str, workers: int) -> tuple[float, float, str]:
    """(command seconds, landing seconds, the summary's accounting line) of one configuration."""
    out = root / f"{storage}-{workers}"
    args = [sys.executable, "-m", "hipages_pipeline.cli", "run", "--source", source, "--output-dir", str(out / "out"),
            "--max-hours-per-run", "1", "--workers", str(workers), "--storage", storage]
    if storage == "delta":
        args += ["--lake-uri", str(out / "lake")]
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    began = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{storage} --workers {workers} failed:\n{done.stderr[-3000:]}")
    landed = re.search(r"landed \d+ file\(s\), \d+ lines in ([\d.]+) s", done.stderr)
    landing = float(landed.group(1)) if landed else float("nan")
    accounting = next(line.strip() for line in done.stdout.splitlines() if "accounting" in line)
    return seconds, landing, accounting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-per-hour", type=int, default=100_000)
    parser.add_argument("--out", default="benchmarks/WORKERS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hipages-workers-") as scratch:
        root = Path(scratch)
        (root / "source").mkdir()
        source = _sources(root / "source", args.events_per_hour)
        rows = []
        for storage in ("duckdb", "delta"):
            for workers in WORKERS:
                seconds, landing, accounting = _one(source, root, storage, workers)
                rows.append(f"| {storage} | {workers} | {seconds:.1f} | {landing:.1f} | {accounting} |")
                print(rows[-1], file=sys.stderr)
    report = "\n".join([
        f"# 12 hourly files with 1, 2, 4 workers ({datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores)", "",
        f"{HOURS} files of {args.events_per_hour:,} lines (one hour each), `--max-hours-per-run 1` (12 runs), "
        "from empty outputs. `python -m benchmarks.workers`.", "",
        "| storage | workers | command, s | of which landing, s | accounting |", "| --- | ---: | ---: | ---: | --- |", *rows, ""])
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
