"""Where (a)'s time went, from the Dagster instance its run recorded in (``DAGSTER_HOME``).

``python -m benchmarks.steps`` (with ``DAGSTER_HOME`` set to the instance of one ``hipages-pipeline
run``) prints JSON: per step (asset) its wall seconds summed over the runs (STEP_START ->
STEP_SUCCESS/STEP_FAILURE in each run's event log) and how many times it ran, the number of runs
and their summed wall seconds (run start -> end, from the run records). The time outside the runs
(process start, imports, planning between runs) is the command's wall time minus that.
"""

from __future__ import annotations

import json
import sys
import warnings

TIMING_EVENTS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE")


def step_durations() -> dict:
    """The instance's steps and runs (see the module docstring)."""
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.get()
    kinds = {getattr(DagsterEventType, name) for name in TIMING_EVENTS}
    steps: dict[str, dict[str, float]] = {}
    runs = {"runs": 0, "run_seconds": 0.0, "failed_steps": 0}
    for record in instance.get_run_records():
        runs["runs"] += 1
        if record.start_time and record.end_time:
            runs["run_seconds"] += record.end_time - record.start_time
        started: dict[str, float] = {}
        cursor = None
        while True:
            page = instance.get_records_for_run(record.dagster_run.run_id, cursor=cursor, of_type=kinds, limit=5000)
            for event in page.records:
                entry = event.event_log_entry
                kind = entry.dagster_event.event_type_value
                if kind == "STEP_START":
                    started[entry.step_key] = entry.timestamp
                elif entry.step_key in started:
                    step = steps.setdefault(entry.step_key, {"seconds": 0.0, "count": 0})
                    step["seconds"] += entry.timestamp - started.pop(entry.step_key)
                    step["count"] += 1
                    runs["failed_steps"] += kind == "STEP_FAILURE"
            cursor = page.cursor
            if not page.has_more:
                break
    return {**runs, "steps": dict(sorted(steps.items(), key=lambda item: -item[1]["seconds"]))}


def main() -> int:
    """Print :func:`step_durations` as JSON."""
    warnings.filterwarnings("ignore")
    print(json.dumps(step_durations()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
