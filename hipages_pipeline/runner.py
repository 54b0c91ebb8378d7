"""Run the whole pipeline over every hour present in the source (what ``hipages-pipeline run`` does).

1. Scan the source once to find the UTC hours that hold lines (the sample spans Jan-Dec 2017
   but only 8 hours have data: materializing the 8,000 empty hours between them would be waste).
2. Group contiguous hours into ranges and materialize ``hipages_etl_job`` once per range (a
   ranged run, as a single-run backfill would).
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

from hipages_pipeline.assets.ingest import rejected_without_hour
from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.events.csv_files import write_csv_atomic
from hipages_pipeline.events.reader import SourceReadError
from hipages_pipeline.events.tables import event_table, source_hours
from hipages_pipeline.io_manager import create_table_sql
from hipages_pipeline.partitions import PARTITION_KEY_FORMAT, contiguous_hour_ranges
from hipages_pipeline.resources import (
    DATABASE_SCHEMA,
    EventSource,
    database_path,
    make_resources,
)
from hipages_pipeline.schemas import (
    CLEANED_EVENTS,
    DUPLICATE_EVENTS,
    HOURLY_ACTIVITY,
    REJECTED_EVENTS,
)

STORED_TABLES = {"cleaned_events": CLEANED_EVENTS, "duplicate_events": DUPLICATE_EVENTS,
                 "hourly_activity": HOURLY_ACTIVITY, "rejected_events": REJECTED_EVENTS,
                 "rejected_without_hour": REJECTED_EVENTS}

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


def _whole_tables(database: Path, hours: list[datetime], output_dir: Path) -> dict[str, tuple[Path, int]]:
    """Write event_table.csv, hourly_activity.csv, rejected_events.csv and user_sessions.csv
    (the sessions that start in ``hours``) for ``hours``."""
    from hipages_pipeline.events.sessions import session_table
    from hipages_pipeline.schemas import USER_SESSIONS

    con = duckdb.connect(str(database))
    try:
        con.execute("SET TimeZone = 'UTC'")
        # A run whose hours all failed (or a source with no hour at all) leaves tables unmade:
        # create them empty from their declared schemas, so the whole files still get a header.
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE_SCHEMA}")
        for name, schema in STORED_TABLES.items():
            con.execute(create_table_sql(f"{DATABASE_SCHEMA}.{name}", schema))
        con.execute(create_table_sql(f"{DATABASE_SCHEMA}.user_sessions", USER_SESSIONS))
        con.register("run_hours", pd.DataFrame({"hour": pd.to_datetime(hours).astype("datetime64[us]")}))
        s = DATABASE_SCHEMA
        in_hours = "date_trunc('hour', time_stamp) IN (SELECT hour FROM run_hours)"
        cleaned = con.sql(f"SELECT * FROM {s}.cleaned_events WHERE {in_hours}").df()
        hourly = con.sql(
            f"SELECT * FROM {s}.hourly_activity WHERE strptime(time_bucket, '%Y%m%d%H') IN "
            "(SELECT hour FROM run_hours) ORDER BY ALL NULLS FIRST").df()
        rejected = con.sql(
            f"(SELECT * FROM {s}.rejected_events WHERE {in_hours} ORDER BY source_file, line_number) "
            f"UNION ALL (SELECT * FROM {s}.rejected_without_hour ORDER BY source_file, line_number)").df()
        duplicates = con.sql(f"SELECT count(*) FROM {s}.duplicate_events WHERE {in_hours}").fetchone()[0]
        sessions = con.sql(f"SELECT * FROM {s}.user_sessions WHERE date_trunc('hour', session_start) IN "
                           "(SELECT hour FROM run_hours)").df()
    finally:
        con.close()
    outputs = {}
    for column in ("time_stamp", "rejected_at"):  # ISO 8601 UTC, like the other CSV files
        rejected[column] = pd.to_datetime(rejected[column]).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    for name, frame in (("event_table", event_table(cleaned)), ("hourly_activity", hourly),
                        ("rejected_events", rejected), ("user_sessions", session_table(sessions))):
        path = output_dir / f"{name}.csv"
        write_csv_atomic(frame, path)
        outputs[name] = (path, len(frame))
    outputs["duplicates"] = (Path(), int(duplicates))
    return outputs


def run_pipeline(source: EventSource, output_dir: str, instance: DagsterInstance | None = None,
                 progress: Callable[[str], None] = lambda message: print(message, file=sys.stderr)) -> RunSummary:
    """Materialize every hour present in the source, write the whole tables, and account for lines.

    Raises:
        dagster.Failure: no source file matches the glob, or the time zone is unknown.
        ConfigurationError: the output directory cannot be written.
        PipelineError: a source file cannot be read.
    """
    began = time.monotonic()
    _check_writable(Path(output_dir))
    resources = make_resources(source, output_dir)
    files = source.files()
    try:
        found = source_hours(files, source.settings())
    except SourceReadError as exc:
        raise PipelineError(str(exc)) from exc
    hours = [hour.to_pydatetime() for hour in found["hour"]]
    summary = RunSummary(lines_read=found.attrs["lines_read"], hours=hours)
    ranges = contiguous_hour_ranges(hours)
    progress(f"{len(files)} source file(s), {summary.lines_read} lines, {len(hours)} hour(s) with data "
             f"-> {len(ranges)} ranged run(s)")
    instance = instance or DagsterInstance.ephemeral()
    job = build_definitions(resources).resolve_job_def("hipages_etl_job")
    for number, (first, last) in enumerate(ranges, start=1):
        lines = int(found[(found["hour"] >= first) & (found["hour"] <= last)]["lines"].sum())
        started = time.monotonic()
        progress(f"[{number}/{len(ranges)}] {first:%Y-%m-%d %H:00} .. {last:%Y-%m-%d %H:00} UTC, {lines} lines")
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET,
            tags={"dagster/asset_partition_range_start": first.strftime(PARTITION_KEY_FORMAT),
                  "dagster/asset_partition_range_end": last.strftime(PARTITION_KEY_FORMAT)},
        )
        summary.runs += 1
        for evaluation in result.get_asset_check_evaluations():
            summary.checks.add(evaluation)
        elapsed = time.monotonic() - started
        progress(f"      {'ok' if result.success else 'FAILED'} in {elapsed:.1f} s ({lines / max(elapsed, 1e-9):,.0f} lines/s)")
        if not result.success:
            if _interrupted(result):
                raise KeyboardInterrupt(f"interrupted during {first:%Y-%m-%d %H:00} .. {last:%Y-%m-%d %H:00}")
            summary.failed_runs.append(f"{first:%Y-%m-%d %H:00}..{last:%H:00}: {_failure_reason(result)}")
    if not ranges:  # no line has an hour: still record the quarantine
        result = materialize([rejected_without_hour], resources=resources, instance=instance,
                             raise_on_error=False, run_config=QUIET)
        summary.runs += 1
        for evaluation in result.get_asset_check_evaluations():
            summary.checks.add(evaluation)
        if not result.success:
            summary.failed_runs.append(f"rejected_without_hour: {_failure_reason(result)}")
    if database_path(output_dir).exists():  # also after a failed run: what was stored, quarantine included
        outputs = _whole_tables(database_path(output_dir), hours, Path(output_dir))
        summary.duplicates = outputs.pop("duplicates")[1]
        summary.accepted = outputs["event_table"][1]
        summary.rejected = outputs["rejected_events"][1]
        summary.outputs = outputs
    summary.seconds = time.monotonic() - began
    return summary
