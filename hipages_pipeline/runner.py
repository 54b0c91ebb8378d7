"""Run the whole pipeline over every hour present in the source (what ``hipages-pipeline run`` does).

1. Materialize ``rejected_without_hour``: its light pass over the source finds the UTC hours that
   hold lines (the sample spans Jan-Dec 2017 but only 8 hours have data: materializing the 8,000
   empty hours between them would be waste) and stores the lines that have no hour.
2. Group contiguous hours into ranges (at most ``max_hours_per_run`` hours each) and materialize
   ``hipages_etl_job`` once per range (a ranged run, as a single-run backfill would).
3. Write the whole tables of those hours as single files in the output directory:
   ``event_table.csv``, ``hourly_activity.csv``, ``user_sessions.csv`` and
   ``rejected_events.csv`` (the quarantine: the hours' rows, then the rows without an hour).
4. Account for every line: lines_read = accepted + duplicates + rejected.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
from dagster import DagsterInstance, materialize

from hipages_pipeline.assets import ALL_ASSETS
from hipages_pipeline.assets.exports import EVENT_TABLE_LAYOUT, HOURLY_ACTIVITY_LAYOUT
from hipages_pipeline.assets.ingest import rejected_without_hour
from hipages_pipeline.assets.sessions import USER_SESSIONS_LAYOUT
from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.events.csv_files import concatenate_csv_files, write_csv_atomic
from hipages_pipeline.io_manager import create_table_sql
from hipages_pipeline.partitions import PARTITION_KEY_FORMAT, contiguous_hour_ranges
from hipages_pipeline.resources import (
    DATABASE_SCHEMA,
    DuckDBWarehouse,
    EventSource,
    make_resources,
)
from hipages_pipeline.schemas import (
    CLEANED_EVENTS,
    DUPLICATE_EVENTS,
    HOURLY_ACTIVITY,
    REJECTED_EVENTS,
    USER_SESSIONS,
)

STORED_TABLES = {"cleaned_events": CLEANED_EVENTS, "duplicate_events": DUPLICATE_EVENTS,
                 "hourly_activity": HOURLY_ACTIVITY, "rejected_events": REJECTED_EVENTS,
                 "rejected_without_hour": REJECTED_EVENTS, "user_sessions": USER_SESSIONS}
DEFAULT_MAX_HOURS_PER_RUN = 24
"""Hours per ranged run (the partition cap): each run reads the whole source once, so fewer,
longer runs read it less often; DuckDB's memory limit, not the cap, bounds a run's memory."""

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Run config for the command line: no Dagster log lines (progress and the failures' reasons are
printed by the runner; the full logs are in the Dagster instance when DAGSTER_HOME is set)."""


class PipelineError(RuntimeError):
    """The pipeline could not run or failed; the message says why."""


class ConfigurationError(PipelineError):
    """The run cannot start as configured (e.g. the output directory is not writable)."""


@dataclass
class CheckTally:
    """Asset check outcomes across all runs: name -> [passed, failed], plus failure texts."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(counts[0] for counts in self.counts.values())

    def failed(self, severity: str) -> int:
        """How many evaluations failed with this severity (``WARN`` or ``ERROR``)."""
        return sum(1 for failure in self.failures if failure.startswith(severity))

    def add(self, evaluation) -> None:
        name = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
        self.counts.setdefault(name, [0, 0])[0 if evaluation.passed else 1] += 1
        if not evaluation.passed:
            self.failures.append(f"{evaluation.severity.value} {name}: {evaluation.description or ''}".rstrip(": "))


@dataclass
class RunSummary:
    """What a whole run did; ``ok`` is False when a run failed or the accounting does not hold."""

    lines_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    hours: list[datetime] = field(default_factory=list)
    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    checks: CheckTally = field(default_factory=CheckTally)
    outputs: dict[str, tuple[Path, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def accounted(self) -> bool:
        return self.lines_read == self.accepted + self.duplicates + self.rejected

    @property
    def ok(self) -> bool:
        return not self.failed_runs and self.accounted and not self.nothing_accepted

    @property
    def nothing_accepted(self) -> bool:
        """Lines were read but none became an event: the source is not what we expect."""
        return self.lines_read > 0 and self.accepted == 0

    def render(self) -> str:
        """The human-readable summary printed at the end of ``hipages-pipeline run``."""
        if self.failed_runs:
            mark = f"incomplete: {len(self.failed_runs)} run(s) failed, their hours are not all stored"
        else:
            mark = "ok" if self.accounted else "MISMATCH: lines were lost or counted twice"
        lines = [
            "",
            "Summary",
            f"  lines read        {self.lines_read}",
            f"  events accepted   {self.accepted}",
            f"  duplicates        {self.duplicates}",
            f"  rejected          {self.rejected}",
            f"  accounting        {self.lines_read} = {self.accepted} + {self.duplicates} + {self.rejected} ({mark})",
            f"  hours             {len(self.hours)} in {self.runs} run(s), {self.seconds:.1f} s",
            f"  asset checks      {self.checks.passed + len(self.checks.failures)} evaluations: "
            f"{self.checks.passed} passed, {self.checks.failed('WARN')} WARN, {self.checks.failed('ERROR')} ERROR",
        ]
        lines += [f"    - {failure}" for failure in dict.fromkeys(self.checks.failures)]
        lines += [f"  {name:<17} {path} ({rows} row{'' if rows == 1 else 's'})" for name, (path, rows) in self.outputs.items()]
        lines += [f"  FAILED run        {reason}" for reason in self.failed_runs]
        if self.nothing_accepted:
            lines.append("  NO EVENT ACCEPTED every line was quarantined: see rejected_events.csv for the reasons")
        return "\n".join(lines)


def _check_writable(output_dir: Path) -> None:
    """Fail fast, with the reason, when the output directory cannot be created or written."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(f"cannot write to the output directory {output_dir}: {exc.strerror or exc}") from exc


def _failure_reason(result) -> str:
    """The failed steps and their errors' first lines (the root cause's message when wrapped)."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            while error is not None and error.cause is not None and "DagsterExecution" in (error.cls_name or ""):
                error = error.cause
            text = " ".join(error.message.split()) if error else "failed"
            messages.append(f"{event.step_key}: {text}")
    return "; ".join(messages) or "the run failed"


def _interrupted(result) -> bool:
    """Whether the run stopped because the process was interrupted (Ctrl-C, SIGTERM)."""
    for event in result.all_events:
        if event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE"):
            error = getattr(event.event_specific_data, "error", None)
            while error is not None:
                if error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                    return True
                error = error.cause
    return False


def _whole_tables(warehouse: DuckDBWarehouse, hours: list[datetime], done: list[datetime],
                  output_dir: Path) -> dict[str, tuple[Path, int]]:
    """Write event_table.csv, hourly_activity.csv and user_sessions.csv (the sessions that start in
    those hours) for the hours ``done`` (whose runs succeeded: their files are current) by
    concatenating the hours' files (each sorted, hours in order: the whole table, sorted), and
    rejected_events.csv from the database for all ``hours`` (what was stored, also of a failed
    run: the quarantine explains failures), then the rows without an hour. Row counts come from
    the database."""
    outputs = {}
    with warehouse.connect() as con:
        # A run whose hours all failed (or a source with no hour at all) leaves tables unmade:
        # create them empty from their declared schemas, so the whole files still get a header.
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE_SCHEMA}")
        for name, schema in STORED_TABLES.items():
            con.execute(create_table_sql(f"{DATABASE_SCHEMA}.{name}", schema))
        con.register("run_hours", pd.DataFrame({"hour": pd.to_datetime(hours).astype("datetime64[us]")}))
        con.register("done_hours", pd.DataFrame({"hour": pd.to_datetime(done).astype("datetime64[us]")}))
        s = DATABASE_SCHEMA

        def count(table: str, hour: str, among: str = "done_hours") -> int:
            return int(con.sql(f"SELECT count(*) FROM {s}.{table} WHERE {hour} IN (SELECT hour FROM {among})").fetchone()[0])

        for name, layout, rows in (
            ("event_table", EVENT_TABLE_LAYOUT, count("cleaned_events", "date_trunc('hour', time_stamp)")),
            ("hourly_activity", HOURLY_ACTIVITY_LAYOUT, count("hourly_activity", "strptime(time_bucket, '%Y%m%d%H')")),
            ("user_sessions", USER_SESSIONS_LAYOUT, count("user_sessions", "date_trunc('hour', session_start)")),
        ):
            path = output_dir / f"{name}.csv"
            concatenate_csv_files([output_dir / layout.directory / f"{hour:%Y%m%d%H}.csv" for hour in done], path,
                                  list(layout.columns))
            outputs[name] = (path, rows)
        in_hours = "date_trunc('hour', time_stamp) IN (SELECT hour FROM run_hours)"
        rejected = con.sql(
            f"SELECT * EXCLUDE (part) FROM (SELECT 0 AS part, * FROM {s}.rejected_events WHERE {in_hours} "
            f"UNION ALL SELECT 1 AS part, * FROM {s}.rejected_without_hour) ORDER BY part, source_file, line_number").df()
        duplicates = count("duplicate_events", "date_trunc('hour', time_stamp)", "run_hours")
    for column in ("time_stamp", "rejected_at"):  # ISO 8601 UTC, like the other CSV files
        rejected[column] = pd.to_datetime(rejected[column]).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = output_dir / "rejected_events.csv"
    write_csv_atomic(rejected, path)
    outputs["rejected_events"] = (path, len(rejected))
    outputs["duplicates"] = (Path(), duplicates)
    return outputs


def _materializations(result, asset: str) -> dict[str, object]:
    """The metadata values of an asset's materialization in a run's result."""
    events = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in events[0].metadata.items()} if events else {}


def run_pipeline(source: EventSource, output_dir: str, instance: DagsterInstance | None = None,
                 progress: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
                 max_hours_per_run: int = DEFAULT_MAX_HOURS_PER_RUN, memory_limit: str | None = None,
                 threads: int | None = None) -> RunSummary:
    """Materialize every hour present in the source, write the whole tables, and account for lines.

    1. ``rejected_without_hour`` is materialized first: its light pass over the source stores the
       lines without an hour and reports the hours that have lines (``hours_with_lines``).
    2. Those hours, grouped into contiguous ranges of at most ``max_hours_per_run`` hours, are
       materialized by ``hipages_etl_job`` (without ``rejected_without_hour``), one ranged run
       per range: each run reads the source once, and DuckDB's memory limit bounds its memory.

    ``memory_limit`` and ``threads`` set the warehouse's DuckDB (see
    :class:`hipages_pipeline.resources.DuckDBWarehouse`; defaults from the environment).

    Raises:
        dagster.Failure: no source file matches the glob, or the time zone is unknown.
        ConfigurationError: the output directory cannot be written, or max_hours_per_run < 1.
        PipelineError: a source file cannot be read.
    """
    began = time.monotonic()
    if max_hours_per_run < 1:
        raise ConfigurationError(f"max_hours_per_run must be at least 1, got {max_hours_per_run}")
    _check_writable(Path(output_dir))
    try:
        resources = make_resources(source, output_dir, memory_limit=memory_limit, threads=threads)
        resources["warehouse"].check_settings()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    files = source.files()
    source.settings()  # an unknown time zone is a configuration error, before any run
    instance = instance or DagsterInstance.ephemeral()
    progress(f"{len(files)} source file(s): finding the hours with lines (and the lines without one)")
    result = materialize([rejected_without_hour], resources=resources, instance=instance,
                         raise_on_error=False, run_config=QUIET)
    summary = RunSummary(runs=1)
    for evaluation in result.get_asset_check_evaluations():
        summary.checks.add(evaluation)
    if not result.success:
        if _interrupted(result):
            raise KeyboardInterrupt("interrupted while reading the source")
        raise PipelineError(_failure_reason(result))
    found = _materializations(result, "rejected_without_hour")
    hours_with_lines = {datetime.strptime(key, PARTITION_KEY_FORMAT): int(lines)
                        for key, lines in dict(found["hours_with_lines"]).items()}
    summary.lines_read = int(found["lines_read"])
    summary.hours = hours = sorted(hours_with_lines)
    ranges = contiguous_hour_ranges(hours, max_hours=max_hours_per_run)
    progress(f"{summary.lines_read} lines, {len(hours)} hour(s) with data -> {len(ranges)} ranged run(s) "
             f"(at most {max_hours_per_run} hours each)")
    job = build_definitions(resources).resolve_job_def("hipages_etl_job")
    selection = [key for assets in ALL_ASSETS for key in assets.keys if key != rejected_without_hour.key]
    done: list[datetime] = []  # the hours of the runs that succeeded: only their files are current
    for number, (first, last) in enumerate(ranges, start=1):
        lines = sum(count for hour, count in hours_with_lines.items() if first <= hour <= last)
        started = time.monotonic()
        progress(f"[{number}/{len(ranges)}] {first:%Y-%m-%d %H:00} .. {last:%Y-%m-%d %H:00} UTC, {lines} lines")
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET, asset_selection=selection,
            tags={"dagster/asset_partition_range_start": first.strftime(PARTITION_KEY_FORMAT),
                  "dagster/asset_partition_range_end": last.strftime(PARTITION_KEY_FORMAT)},
        )
        summary.runs += 1
        for evaluation in result.get_asset_check_evaluations():
            summary.checks.add(evaluation)
        if result.success:
            done.extend(hour for hour in hours if first <= hour <= last)
        elapsed = time.monotonic() - started
        progress(f"      {'ok' if result.success else 'FAILED'} in {elapsed:.1f} s ({lines / max(elapsed, 1e-9):,.0f} lines/s)")
        if not result.success:
            if _interrupted(result):
                raise KeyboardInterrupt(f"interrupted during {first:%Y-%m-%d %H:00} .. {last:%Y-%m-%d %H:00}")
            summary.failed_runs.append(f"{first:%Y-%m-%d %H:00}..{last:%H:00}: {_failure_reason(result)}")
    warehouse = resources["warehouse"]
    try:
        outputs = _whole_tables(warehouse, hours, done, Path(output_dir))
    except ValueError as exc:  # an hour's file of another layout (an older version's output directory)
        raise PipelineError(f"cannot write the whole tables: {exc}; start from an empty output directory") from exc
    summary.duplicates = outputs.pop("duplicates")[1]
    summary.accepted = outputs["event_table"][1]
    summary.rejected = outputs["rejected_events"][1]
    summary.outputs = outputs
    summary.seconds = time.monotonic() - began
    return summary
