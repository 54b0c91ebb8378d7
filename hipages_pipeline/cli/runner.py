"""``hipages-pipeline run``: plan the runs, launch them through Dagster, summarize what they did.

1. Land the source files that are new or changed since they were landed (path, size,
   modification time against ``landed_files``): their ``source_files`` partitions are added to
   the instance and landed in ranged runs of ``hipages_landing_job`` (each file read once).
2. Materialize ``hipages_etl_job``'s hourly assets for the hours the landing touched and any
   hour whose landed lines are newer than its last materialization: contiguous hours are one
   ranged run, at most ``max_hours_per_run`` hours each (Dagster's partition-key ranges, cut by
   that cap, see :func:`hipages_pipeline.defs.partitions.run_ranges`). Hourly runs read stored
   rows only.
3. Materialize the four whole-table CSV assets (``whole_*_csv``), even after a failed range: they
   hold every hour the database holds. With nothing new and nothing stale, no run is launched.
4. Account for every line of the source's files: lines = accepted + duplicates + rejected; when
   the files changed during the command (size, mtime, files added or removed), the summary says so.

An OS error (full disk, permissions, a vanished file) ends the command with one line naming the
path and the cause (:func:`os_fault`), whether it failed a step or escaped the run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from hipages_pipeline.cli.failures import failure_reason, interrupted, one_line, os_fault
from hipages_pipeline.cli.landing import (
    changed_files,
    expand_hours,
    files_to_land,
    landed_state,
    landing_ranges,
    lines_per_hour,
    one_planned_event_per_asset,
    source_accounting,
    source_state,
    stale_hours,
    unlandable,
)
from hipages_pipeline.cli.summary import RunSummary, hours_label
from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.partitions import hour_of, range_tags, run_ranges, source_file_partitions
from hipages_pipeline.defs.resources import EventSource, make_resources

DEFAULT_MAX_HOURS_PER_RUN = 24
"""Hours per ranged run (the partition cap): each run has a fixed cost (a second or so), so fewer,
longer runs cost less; DuckDB's memory limit, not the cap, bounds a run's memory."""
MAX_FILES_PER_LANDING = 5000
"""Files per landing run at most (the IO manager deletes a run's files' rows by listing them)."""

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Run config for the command line: no Dagster log lines (progress and the failures' reasons are
printed by the runner; the full logs are in the Dagster instance when DAGSTER_HOME is set)."""

LANDED_FILES_KEY = AssetKey("landed_files")
WHOLE_TABLES = [AssetKey(f"whole_{name}_csv") for name in ("event_table", "hourly_activity", "user_sessions",
                                                           "rejected_events")]


class PipelineError(RuntimeError):
    """The pipeline could not run or failed; the message (one line) says why."""


class ConfigurationError(PipelineError):
    """The run cannot start as configured (e.g. the output directory is not writable)."""


def _check_writable(output_dir: Path) -> None:
    """Fail fast, with the reason, when the output directory cannot be created or written."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(f"cannot write to the output directory {output_dir}: {exc.strerror or exc}") from exc


def _metadata(result, asset: AssetKey) -> dict[str, object]:
    """The metadata values of an asset's materialization in a run's result."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == asset]
    return {key: value.value for key, value in events[0].materialization.metadata.items()} if events else {}


class Runner:
    """Launches the runs of one ``hipages-pipeline run`` in process, on one Dagster instance."""

    def __init__(self, defs: Definitions, instance: DagsterInstance, progress: Callable[[str], None],
                 output_dir: Path | None = None) -> None:
        self.job = defs.resolve_job_def("hipages_etl_job")
        self.landing_job = defs.resolve_job_def("hipages_landing_job")
        self.instance, self.progress, self.output_dir = instance, progress, output_dir
        self.summary = RunSummary()

    def execute(self, selection: list[AssetKey] | None, tags: dict[str, str] | None = None, hours: str | None = None,
                job=None):
        """One run of the selected assets; its check evaluations are tallied under ``hours`` (the
        run's partition range, None for unpartitioned assets).

        Raises:
            PipelineError: the run could not complete (an error outside its steps, e.g. a full
                disk under DuckDB's commit or the Dagster instance's storage); the message is one line.
        """
        try:
            result = (job or self.job).execute_in_process(instance=self.instance, raise_on_error=False,
                                                          run_config=QUIET, asset_selection=selection, tags=tags or {})
        except Exception as exc:  # noqa: BLE001 - reported on one line, never as a traceback
            what = f"{type(exc).__name__}: {one_line(exc)}"
            fault = os_fault(what, self._fault_path(exc))
            names = (", ".join(key.to_user_string() for key in selection) if len(selection) <= 4
                     else f"{len(selection)} assets") if selection else (job or self.job).name
            raise PipelineError(self._with_failed_runs(
                f"{fault + '; ' if fault else ''}the run of {names}"
                f"{' for ' + hours if hours else ''} failed: {what}")) from exc
        self.summary.runs += 1
        for evaluation in result.get_asset_check_evaluations():
            self.summary.checks.add(evaluation, hours)
        if not result.success and interrupted(result):
            raise KeyboardInterrupt("interrupted")
        return result

    def _fault_path(self, exc: Exception) -> str | None:
        """The path an escaped OS error is about: its own, else the instance's directory for its
        storage (SQLite), else the output directory."""
        if isinstance(exc, OSError) and exc.filename:
            return str(exc.filename)
        if "sqlite" in f"{type(exc).__module__} {exc}".lower():
            return getattr(self.instance, "root_directory", None) or os.environ.get("DAGSTER_HOME")
        return str(self.output_dir) if self.output_dir else None

    def _with_failed_runs(self, message: str) -> str:
        """``message`` followed by the reasons of the ranged runs that failed before."""
        if not self.summary.failed_runs:
            return message
        return f"{message}; failed before: {'; '.join(self.summary.failed_runs)}"

    def fault(self) -> str | None:
        """``"<path>: <cause>"`` of the first failed run that failed on an OS error, else None."""
        return next((found for found in (os_fault(reason, self.output_dir) for reason in self.summary.failed_runs)
                     if found), None)

    def land(self, current: dict[str, tuple[int, int]], warehouse) -> set[str]:
        """Land the files of ``current`` that are new or changed; the partition keys of the hours
        their lines were in (before and after). Raises ``PipelineError`` when a landing run fails."""
        to_land = files_to_land(current, landed_state(warehouse))
        refused = [reason for reason in map(unlandable, to_land) if reason]
        if refused:
            raise ConfigurationError("; ".join(refused))
        self.summary.files = (len(to_land), len(current) - len(to_land))
        if not to_land:
            self.progress(f"{len(current)} source file(s), none new or changed since landed")
            return set()
        known = set(self.instance.get_dynamic_partitions(source_file_partitions.name))
        self.instance.add_dynamic_partitions(source_file_partitions.name, [p for p in to_land if p not in known])
        order = self.instance.get_dynamic_partitions(source_file_partitions.name)
        ranges = landing_ranges(to_land, order, MAX_FILES_PER_LANDING)
        self.progress(f"{len(current)} source file(s): landing {len(to_land)} new or changed "
                      f"({len(current) - len(to_land)} unchanged) in {len(ranges)} run(s)")
        touched: set[str] = set()
        for keys in ranges:
            started = time.monotonic()
            with one_planned_event_per_asset():
                result = self.execute(None, {ASSET_PARTITION_RANGE_START_TAG: keys.start,
                                             ASSET_PARTITION_RANGE_END_TAG: keys.end}, job=self.landing_job)
            if not result.success:
                reason = failure_reason(result)
                fault = os_fault(reason, self.output_dir)
                raise PipelineError(f"{fault + '; ' if fault else ''}landing failed: {reason}")
            found = _metadata(result, LANDED_FILES_KEY)
            touched |= expand_hours(found.get("hours", []))
            self.progress(f"      landed {found.get('files')} file(s), {found.get('lines')} lines in "
                          f"{time.monotonic() - started:.1f} s")
        return touched

    def run_hours(self, hours: dict[str, int], max_hours_per_run: int) -> None:
        """Materialize the hourly assets for ``hours`` (partition key -> landed lines) in ranged
        runs of at most ``max_hours_per_run``."""
        selection = [key for key in self.job.asset_layer.executable_asset_keys if key not in WHOLE_TABLES]
        ranges = run_ranges(hours, max_hours_per_run)
        self.progress(f"{len(hours)} hour(s) to build -> {len(ranges)} ranged run(s) (at most "
                      f"{max_hours_per_run} hours each)")
        for number, keys in enumerate(ranges, start=1):
            first, last = hour_of(keys.start), hour_of(keys.end)
            lines = sum(count for key, count in hours.items() if first <= hour_of(key) <= last)
            self.progress(f"[{number}/{len(ranges)}] {first:%Y-%m-%d %H:00} .. {last:%Y-%m-%d %H:00} UTC, {lines} lines")
            started = time.monotonic()
            result = self.execute(selection, range_tags(first, last), hours_label(first, last))
            elapsed = time.monotonic() - started
            self.progress(f"      {'ok' if result.success else 'FAILED'} in {elapsed:.1f} s "
                          f"({lines / max(elapsed, 1e-9):,.0f} lines/s)")
            if not result.success:
                self.summary.failed_runs.append(f"{hours_label(first, last)}: {failure_reason(result)}")

    def write_whole_tables(self) -> None:
        """Materialize the whole-table CSV assets; their rows go into the summary."""
        result = self.execute(WHOLE_TABLES)
        if not result.success:
            reason = failure_reason(result)
            fault = os_fault(reason, self.output_dir)
            raise PipelineError(self._with_failed_runs(
                f"{fault + '; ' if fault else ''}cannot write the whole tables: {reason}"))
        for key in WHOLE_TABLES:
            found = _metadata(result, key)
            name = key.path[-1].removeprefix("whole_").removesuffix("_csv")
            self.summary.outputs[name] = (Path(str(found["path"])), int(found["rows"]))


def _checked_resources(source: EventSource, output_dir: str, **settings) -> dict[str, object]:
    """:func:`make_resources` with ``settings``, after the warehouse checked them (and claimed the
    source time zone). Raises ``ConfigurationError`` with the reason."""
    try:
        resources = make_resources(source, output_dir, **settings)
        resources["warehouse"].check_settings()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return resources


def run_pipeline(source: EventSource, output_dir: str, instance: DagsterInstance | None = None,
                 progress: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
                 max_hours_per_run: int = DEFAULT_MAX_HOURS_PER_RUN, memory_limit: str | None = None,
                 threads: int | None = None, rebuild: bool = False, land_only: bool = False,
                 storage: str | None = None, lake_uri: str | None = None, workers: int = 1) -> RunSummary:
    """Materialize every hour present in the source, write the whole tables, and account for lines.

    ``memory_limit`` and ``threads`` set the warehouse's DuckDB (see
    :class:`hipages_pipeline.defs.resources.DuckDBWarehouse`; defaults from the environment).
    ``rebuild`` drops the output directory's tables when they were computed in another source
    time zone (without it such a run is refused). ``land_only`` lands the new or changed files
    and stops: ``summary.hours`` are then the hours still to build. ``storage`` and ``lake_uri``:
    where the tables live (see :func:`hipages_pipeline.defs.resources.storage_settings`).
    ``workers`` > 1 sends the hourly runs through a Dagster run queue, at most ``workers`` at once
    on the ``delta`` storage (parallel writers), one at a time on DuckDB (:mod:`hipages_pipeline.cli.queue`).

    Raises:
        dagster.Failure: no source file matches the glob, or the time zone is unknown.
        ConfigurationError: the output directory cannot be written, its tables were computed in
            another source time zone (and ``rebuild`` is False), or max_hours_per_run < 1.
        PipelineError: a source file cannot be read, the whole tables cannot be written, or a run
            could not complete (the message is one line; it names the path and cause of an OS error).
        KeyboardInterrupt: a run was interrupted.
    """
    began = time.monotonic()
    if max_hours_per_run < 1:
        raise ConfigurationError(f"max_hours_per_run must be at least 1, got {max_hours_per_run}")
    _check_writable(Path(output_dir))
    source.files()  # no file matches: a configuration error, before any run
    source.settings()  # an unknown time zone is a configuration error, before any run
    # after the source is known to be readable: --rebuild drops the tables here
    resources = _checked_resources(source, output_dir, memory_limit=memory_limit, threads=threads, rebuild=rebuild,
                                   storage=storage, lake_uri=lake_uri)
    before = source_state(source)
    warehouse = resources["warehouse"]
    parallel_writers = warehouse.lake_uri is not None  # delta: runs of disjoint hours commit side by side
    if workers > 1:
        from hipages_pipeline.cli.daemon import queue_instance
        from hipages_pipeline.cli.queue import QueuedRuns

        instance = queue_instance(instance, Path(output_dir), workers, parallel_writers, progress)
    runner = Runner(build_definitions(resources), instance or DagsterInstance.ephemeral(), progress,
                    Path(output_dir).absolute())
    touched = runner.land(before, warehouse)
    hours = lines_per_hour(warehouse, touched | stale_hours(warehouse))
    runner.summary.hours = sorted(hour_of(key) for key in hours)
    if land_only:
        runner.summary.land_only = True
    else:
        if hours and workers > 1:
            QueuedRuns(runner, resources, workers, parallel_writers).run_hours(hours, max_hours_per_run)
        elif hours:
            runner.run_hours(hours, max_hours_per_run)
        if hours or touched or runner.summary.files[0]:
            runner.write_whole_tables()
        else:
            progress("nothing new: every source file is landed and every hour is up to date")
    (runner.summary.lines_read, runner.summary.accepted, runner.summary.duplicates,
     runner.summary.rejected) = source_accounting(warehouse, list(before))
    runner.summary.source_changed = changed_files(before, source_state(source))
    runner.summary.fault = runner.fault()
    runner.summary.seconds = time.monotonic() - began
    return runner.summary
