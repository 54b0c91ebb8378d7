"""``hipages-pipeline run --workers N``: the hourly ranged runs through a Dagster instance's run queue.

The command submits one run of ``hipages_etl_job`` per range of hours to the instance's queue
(:mod:`hipages_pipeline.cli.daemon`: which instance, which daemon); the daemon's
QueuedRunCoordinator lets at most N start at once and its run launcher starts each in its own
process (DefaultRunLauncher; Docker or Kubernetes workers by changing only the launcher).

- **How runs are made**: as ``dagster job launch`` and the UI do (``instance.create_run`` from a
  code location's job snapshot and execution plan, then ``instance.submit_run``), with the code
  location loaded in this process (it is already imported: no extra code server to wait for).
- **Settings**: the command's resources travel in each run's config (``resources:`` section:
  source, output directory, DuckDB settings), so any daemon or remote worker builds exactly what
  the command would; the daemon the command starts also gets them as ``HIPAGES_*`` variables
  (choices made when the code location loads, such as a storage kind, follow from those).
- **One writer**: with ``parallel_writers`` False (DuckDB: one writer per file) the runs are
  serialized: the command's instance lets one run out at a time, and on another instance
  the command keeps one run in the queue at a time if its limits allow more.
- **Progress and summary**: one line per run as it starts and ends; failures go to
  ``summary.failed_runs``, and the ASSET_CHECK_EVALUATION events of each run (a retried run's
  attempts included) to ``summary.checks`` as in process.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterEventType, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG

from hipages_pipeline.cli.daemon import (
    DEFINITIONS_MODULE,
    LOCATION_NAME,
    Daemon,
    cli_instance_home,
    daemon_heartbeat_age,
    daemon_running,
    queue_limit,
    write_workspace,
)
from hipages_pipeline.cli.failures import RunLog, one_line
from hipages_pipeline.cli.summary import hours_label
from hipages_pipeline.defs.automation.stale_runs import RUN_WORKER_TAG, dead_worker
from hipages_pipeline.defs.partitions import hour_of, range_tags, run_ranges

COMMAND_TAG = "hipages/cli-command"
"""Run tag: the id of the ``hipages-pipeline run`` that submitted the run (one per command)."""
POLL_SECONDS = 0.5
DEAD_WORKER_GRACE_SECONDS = 150.0
"""A STARTED run whose worker process is gone is marked failed by its code server (at once) or by
hipages_stale_runs_sensor (within a minute); past this, the command stops waiting for it."""
STARTING_GRACE_SECONDS = 240.0
"""Run monitoring fails a run that stays STARTING 180 s; past this, the command stops waiting."""
RETRY_GRACE_SECONDS = 60.0
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def run_config(resources: dict[str, object]) -> dict[str, object]:
    """The run config that gives a run the command's resources (every configurable field)."""
    section = {key: {"config": value.model_dump(by_alias=True, exclude_none=True)}
               for key, value in resources.items() if hasattr(value, "model_dump")}
    from hipages_pipeline.cli.runner import QUIET

    return {"resources": section, **QUIET}


def settings_env(resources: dict[str, object]) -> dict[str, str]:
    """The command's settings as the variables the code location reads when it loads."""
    source, warehouse = resources["source"], resources["warehouse"]
    return {"HIPAGES_SOURCE": source.source_glob, "HIPAGES_SOURCE_TIMEZONE": source.source_timezone,
            "HIPAGES_OUTPUT_DIR": str(Path(resources["output"].output_dir).absolute()),
            "HIPAGES_DUCKDB_MEMORY_LIMIT": warehouse.memory_limit, "HIPAGES_DUCKDB_THREADS": str(warehouse.threads),
            "HIPAGES_STORAGE": "delta" if warehouse.lake_uri else "duckdb", "HIPAGES_LAKE_URI": warehouse.lake_uri or "",
            "HIPAGES_AUTOMATION": "off"}  # the command's daemon launches the command's runs only


@dataclass
class Tracked:
    """One ranged run of the command, through its attempts (run retries)."""

    number: int
    label: str
    lines: int
    tags: dict[str, str]
    attempts: list[str] = field(default_factory=list)
    started: float | None = None
    since: float = field(default_factory=time.monotonic)
    done: bool = False

    @property
    def run_id(self) -> str:
        return self.attempts[-1]


class QueuedRuns:
    """Submits the command's ranged runs to the instance's queue and follows them to their end."""

    def __init__(self, runner, resources: dict[str, object], workers: int, parallel_writers: bool) -> None:
        self.runner, self.instance, self.progress = runner, runner.instance, runner.progress
        self.config, self.env = run_config(resources), settings_env(resources)
        self.home = cli_instance_home(Path(resources["output"].output_dir))
        self.allowed = workers if parallel_writers else 1
        self.command = uuid.uuid4().hex[:12]
        self.daemon: Daemon | None = None
        self.checked_daemon = 0.0

    def run_hours(self, hours: dict[str, int], max_hours_per_run: int) -> None:
        """Materialize ``hours`` (partition key -> landed lines) in queued ranged runs."""
        ranges = run_ranges(hours, max_hours_per_run)
        limit, limits = queue_limit(self.instance)
        window = len(ranges) if limit is not None and limit <= self.allowed else self.allowed
        where = getattr(self.instance, "root_directory", None)
        self.progress(f"{len(hours)} hour(s) to build -> {len(ranges)} ranged run(s) (at most {max_hours_per_run} "
                      f"hours each) through the run queue of {where}: {limits}")
        tracked = []
        for number, keys in enumerate(ranges, start=1):
            first, last = hour_of(keys.start), hour_of(keys.end)
            lines = sum(count for key, count in hours.items() if first <= hour_of(key) <= last)
            tracked.append(Tracked(number, hours_label(first, last), lines, range_tags(first, last)))
        with ExitStack() as stack:
            self._prepare(stack)
            stack.callback(self._stop_daemon)
            self._check_daemon(force=True)
            try:
                self._follow(tracked, window)
            except KeyboardInterrupt:
                self._cancel([t for t in tracked if t.attempts and not t.done])
                raise

    def _prepare(self, stack: ExitStack) -> None:
        """Load the code location in this process: the job (without the whole tables) and its plan."""
        from dagster._core.definitions.selector import JobSubsetSelector
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

        from hipages_pipeline.cli.runner import WHOLE_TABLES

        origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFINITIONS_MODULE, attribute="defs",
            working_directory=os.getcwd()), location_name=LOCATION_NAME)
        process = stack.enter_context(WorkspaceProcessContext(self.instance, InProcessWorkspaceLoadTarget(origin)))
        self.workspace = process.create_request_context()
        location = self.workspace.get_code_location(LOCATION_NAME)
        repository = next(iter(location.get_repositories().values()))
        selection = [key for key in self.runner.job.asset_layer.executable_asset_keys if key not in WHOLE_TABLES]
        self.job = location.get_job(JobSubsetSelector(location_name=LOCATION_NAME, repository_name=repository.name,
                                                      job_name=self.runner.job.name, op_selection=None,
                                                      asset_selection=selection))
        self.plan = location.get_execution_plan(self.job, self.config, step_keys_to_execute=None, known_state=None,
                                                instance=self.instance).execution_plan_snapshot
        self.selection = frozenset(selection)

    def _submit(self, run: Tracked) -> None:
        from dagster._core.utils import make_new_run_id

        created = self.instance.create_run(
            job_name=self.job.name, run_id=make_new_run_id(), run_config=self.config, status=DagsterRunStatus.NOT_STARTED,
            tags={**self.job.tags, **run.tags, COMMAND_TAG: self.command}, root_run_id=None, parent_run_id=None,
            step_keys_to_execute=self.plan.step_keys_to_execute, execution_plan_snapshot=self.plan,
            job_snapshot=self.job.job_snapshot, parent_job_snapshot=self.job.parent_job_snapshot,
            asset_selection=self.selection, asset_check_selection=None, resolved_op_selection=None, op_selection=None,
            remote_job_origin=self.job.get_remote_origin(), job_code_origin=self.job.get_python_origin(),
            asset_graph=self.workspace.asset_graph)
        self.instance.submit_run(created.run_id, self.workspace)
        run.attempts.append(created.run_id)
        run.since = time.monotonic()

    def _follow(self, tracked: list[Tracked], window: int) -> None:
        """Keep ``window`` runs in the queue until every run has ended."""
        pending = list(tracked)
        while True:
            active = [run for run in tracked if run.attempts and not run.done]
            while pending and len(active) < window:
                active.append(pending.pop(0))
                self._submit(active[-1])
            if not active:
                return
            records = self.instance.get_run_records(RunsFilter(run_ids=[run.run_id for run in active]))
            by_id = {record.dagster_run.run_id: record for record in records}
            for run in active:
                self._update(run, by_id[run.run_id], len(tracked))
            self._check_daemon()
            time.sleep(POLL_SECONDS)

    def _update(self, run: Tracked, record, total: int) -> None:
        """Report a run's start and end; follow its retry; give up on a run nothing will end."""
        status, tags, now = record.dagster_run.status, record.dagster_run.tags, time.monotonic()
        if status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED) and run.started is None:
            run.started, run.since = run.started or now, now
            again = f", attempt {len(run.attempts)}" if len(run.attempts) > 1 else ""
            self.progress(f"[{run.number}/{total}] {run.label} UTC, {run.lines} lines: started "
                          f"(run {run.run_id[:8]}{again})")
        if status == DagsterRunStatus.STARTED and dead_worker(self.instance, record):
            if now - run.since > DEAD_WORKER_GRACE_SECONDS:
                self._end(run, f"its worker {tags[RUN_WORKER_TAG]} is gone and nothing marked run {run.run_id} "
                          f"failed within {DEAD_WORKER_GRACE_SECONDS:.0f} s (is hipages_stale_runs_sensor on?)")
            return
        if status == DagsterRunStatus.STARTING and now - run.since > STARTING_GRACE_SECONDS:
            return self._end(run, f"run {run.run_id} did not start within {STARTING_GRACE_SECONDS:.0f} s")
        if status == DagsterRunStatus.STARTED:
            run.since = now
        if status not in FINISHED:
            return
        if status == DagsterRunStatus.SUCCESS:
            return self._end(run, None)
        reason = RunLog(self.instance, run.run_id).reason() if status == DagsterRunStatus.FAILURE else "canceled"
        retry = tags.get(AUTO_RETRY_RUN_ID_TAG)
        if retry:
            self.progress(f"      {run.label}: attempt {len(run.attempts)} FAILED ({reason}); retried as run {retry[:8]}")
            run.attempts.append(retry)
            run.started, run.since = None, now
        elif not self._retry_pending(tags.get(WILL_RETRY_TAG), time.time() - (record.end_time or 0)):
            self._end(run, reason)

    def _retry_pending(self, will_retry: str | None, ended_ago: float) -> bool:
        """Whether a failed run's retry is still to appear (run retries tag the failure just after it)."""
        if will_retry is None:
            return self.instance.run_retries_enabled and ended_ago < 5
        return will_retry == "true" and ended_ago < RETRY_GRACE_SECONDS

    def _end(self, run: Tracked, reason: str | None) -> None:
        """A run's end: its line, its checks (every attempt's), and its failure in the summary."""
        run.done = True
        summary = self.runner.summary
        summary.runs += 1
        for run_id in run.attempts:
            records = self.instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
            for record in records:
                summary.checks.add(record.event_log_entry.dagster_event.event_specific_data, run.label)
        elapsed = time.monotonic() - (run.started or run.since)
        if reason is None:
            self.progress(f"      {run.label}: ok in {elapsed:.1f} s ({run.lines / max(elapsed, 1e-9):,.0f} lines/s)")
        else:
            self.progress(f"      {run.label}: FAILED in {elapsed:.1f} s: {reason}")
            summary.failed_runs.append(f"{run.label}: {reason}")

    def _check_daemon(self, force: bool = False) -> None:
        """Start a daemon when none serves the instance; fail when the one started has stopped."""
        from hipages_pipeline.cli.runner import PipelineError

        if self.daemon is not None and self.daemon.exited() is not None:
            raise PipelineError(f"the Dagster daemon stopped (status {self.daemon.exited()}), runs still to "
                                f"do; its log {self.daemon.log_path}: {self.daemon.log_tail()}")
        if self.daemon is not None or (not force and time.monotonic() - self.checked_daemon < 10):
            return
        self.checked_daemon = time.monotonic()
        if daemon_running(self.instance):
            if force:
                self.progress(f"      a Dagster daemon serves this instance (heartbeat "
                              f"{daemon_heartbeat_age(self.instance):.0f} s ago): it launches the runs")
            return
        self.home.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(Path(self.instance.root_directory), write_workspace(self.home), self.env,
                             self.home / "daemon.log")
        self.progress(f"      started dagster-daemon (pid {self.daemon.start()}; log {self.daemon.log_path})")

    def _stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.instance.wipe_daemon_heartbeats()  # the next command must not take them for a live daemon

    def _cancel(self, runs: list[Tracked]) -> None:
        """Interrupted: cancel the command's queued and running runs, and keep a later daemon from
        retrying them (a run canceled while its worker starts ends as FAILURE, to be retried)."""
        for run in runs:
            try:
                self.instance.run_coordinator.cancel_run(run.run_id)
            except Exception as exc:  # noqa: BLE001 - the daemon's group is stopped next anyway
                self.progress(f"      could not cancel run {run.run_id}: {one_line(exc)}")
        deadline = time.monotonic() + 20
        ids = [run.run_id for run in runs]
        while time.monotonic() < deadline:
            ended = [run for run in self.instance.get_runs(RunsFilter(run_ids=ids)) if run.status in FINISHED]
            if len(ended) == len(ids):
                break
            time.sleep(POLL_SECONDS)
        for run_id in ids:
            self.instance.add_run_tags(run_id, {WILL_RETRY_TAG: "false"})
