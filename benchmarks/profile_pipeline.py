"""Where the pipeline's time goes: ``hipages-pipeline run`` in process, timed per phase and asset.

Run it under py-spy (``benchmarks/__main__.py --profile`` does) to also get the hot lines::

    py-spy record --idle --threads --format raw -o stacks.txt -- \\
        python -m benchmarks.profile_pipeline SOURCE OUTPUT_DIR TIMINGS.json

It runs exactly what the CLI runs (:func:`hipages_pipeline.cli.runner.run_pipeline`), with three
read-only probes and no change to the pipeline's code:

- the runner's phases: the Dagster runs (the first materializes ``rejected_without_hour``, whose
  light pass finds the hours) and the whole-table CSVs (``_whole_tables``);
- per Dagster step: its wall time (STEP_START -> STEP_SUCCESS/FAILURE in the run's event log);
- per step: the IO manager's time to load its inputs and to store its outputs (the type
  handlers' ``load_input``/``handle_output``), so compute = step - loads - stores. A store runs
  the asset's DuckDB query (for ``raw_events``: reading and classifying the source files, which
  stream into the table), so most of the work of a table-to-table step is in its stores.

The Dagster instance is the one the CLI would use: ``DAGSTER_HOME``'s when it is set (SQLite
storage), else an ephemeral one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from functools import wraps
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

from hipages_pipeline.cli import runner
from hipages_pipeline.defs import io_manager
from hipages_pipeline.defs.resources import EventSource

TIMINGS: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))


def _timed(name: str, function, key):
    @wraps(function)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMINGS[key(*args, **kwargs)][name] += time.perf_counter() - began
    return wrapper


def install_probes() -> None:
    """Wrap the runner's phases and the IO manager's load/store with timers."""
    runner.Runner.write_whole_tables = _timed("seconds", runner.Runner.write_whole_tables,
                                              lambda *a, **k: "phase:whole_tables")
    for handler in (io_manager.DuckDBQueryTypeHandler, io_manager.PandasByNameTypeHandler):
        handler.handle_output = _timed("store", handler.handle_output,
                                       lambda self, context, *a, **k: f"step:{context.step_key}")
        handler.load_input = _timed("load", handler.load_input,
                                    lambda self, context, *a, **k: f"step:{context.step_context.step.key}")


def step_durations(instance: DagsterInstance) -> dict[str, float]:
    """Wall seconds of every step of every run on ``instance``, summed by step key."""
    starts: dict[tuple[str, str], float] = {}
    durations: dict[str, float] = defaultdict(float)
    for event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
        for record in instance.get_event_records(EventRecordsFilter(event_type=event_type), limit=100000):
            entry = record.event_log_entry
            key = (entry.run_id, entry.step_key)
            if event_type == DagsterEventType.STEP_START:
                starts[key] = entry.timestamp
            else:
                starts.setdefault(("end",) + key, entry.timestamp)
    for (run_id, step), began in [(k, v) for k, v in starts.items() if k[0] != "end"]:
        ended = starts.get(("end", run_id, step))
        if ended is not None:
            durations[step] += ended - began
    return dict(durations)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.profile_pipeline SOURCE OUTPUT_DIR TIMINGS_JSON``."""
    source, output_dir, timings_path = argv if argv is not None else sys.argv[1:]
    install_probes()
    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    began = time.perf_counter()
    summary = runner.run_pipeline(EventSource(source_glob=source), output_dir, instance=instance)
    total = time.perf_counter() - began
    report = {
        "total_seconds": total,
        "ok": summary.ok,
        "lines_read": summary.lines_read,
        "runs": summary.runs,
        "steps": step_durations(instance),
        "timings": {k: dict(v) for k, v in TIMINGS.items()},
    }
    Path(timings_path).write_text(json.dumps(report, indent=2))
    print(summary.render(), file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
