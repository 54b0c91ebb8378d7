"""Runs whose process was killed (``kill -9``, the OOM killer) are marked failed, which frees the run slot.

**Why.** ``dagster_home/dagster.yaml`` lets one run at a time in (``max_concurrent_runs: 1``). A
run whose process dies without reporting stays STARTED in the instance, and the queue then
refuses every queued run forever. Dagster's own repairs do not cover it here:

- run monitoring (``run_monitoring`` in dagster.yaml) checks the worker of a STARTED run only when
  the run launcher supports it (``supports_check_run_worker_health``); the instance's
  ``DefaultRunLauncher`` does not, so a STARTED run is only ever failed by ``max_runtime_seconds``
  (not set: it would also fail long healthy runs). ``start_timeout_seconds`` covers runs that
  never reach STARTED;
- a daemon-launched run's worker is a child of the code server, which fails the run when the child
  dies - unless the code server died too (``dagster dev`` killed, the OOM killer);
- a run of the CLI (``execute_in_process`` on the DAGSTER_HOME instance) has nothing watching it.

**How.** The process that executes a run tags it, at its start, with ``hipages/run-worker =
<host>:<pid>`` (:func:`record_run_worker`, called by the DuckDB IO manager when the run opens it:
every run of this code location that stores or loads a table; with the project's in-process
executor that process is the run's: the caller of ``execute_in_process``, or the daemon-launched
run worker). Dagster records the same pid on the run's RUN_START event (the tag counts only when the two agree:
a run retry inherits its parent's tag until its own worker re-tags it). Every 60 s
``hipages_stale_runs_sensor`` (on by default: it only repairs) looks at the STARTING and STARTED
runs and marks failed, with ``instance.report_run_failed``, each one whose tagged process on this
host no longer exists (or is a zombie, or is a newer process that reused the pid) and whose
status is still in progress after that check.

**Limits.** Same host only: a run tagged with another host, a run without the tag (a run that has
not opened the IO manager yet, or that never does), or whose tag disagrees with its RUN_START
pid is left alone. A run launcher that executes runs elsewhere (Docker, Kubernetes) has its own
worker health checks: enable those in its run monitoring instead. A run that dies before it
reaches STARTED is failed by run monitoring's ``start_timeout_seconds`` (180 s).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRecord,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from hipages_pipeline.lib.processes import process_exists

STALE_RUNS_SENSOR_NAME = "hipages_stale_runs_sensor"
RUN_WORKER_TAG = "hipages/run-worker"
"""Run tag ``<host>:<pid>`` of the process that executes the run (see the module docstring)."""
IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]

_tagged_runs: set[str] = set()
"""Runs this process has tagged already (resources can be opened once per step)."""


def run_worker_tag() -> str:
    """This process's ``<host>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_run_worker(instance: DagsterInstance | None, run_id: str | None) -> None:
    """Tag the run with this process's host and pid (once per run and process)."""
    if instance is None or run_id is None or run_id in _tagged_runs:
        return
    instance.add_run_tags(run_id, {RUN_WORKER_TAG: run_worker_tag()})
    _tagged_runs.add(run_id)


def _parse(tag: str | None) -> tuple[str, int] | None:
    host, _, pid = (tag or "").rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc (None elsewhere or if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def process_gone(pid: int, run_started: float | None) -> bool:
    """Whether process ``pid`` on this host no longer runs the run that started at ``run_started``:
    it does not exist, is a zombie (killed, not yet reaped), or started after the run did (the pid
    was reused)."""
    if not process_exists(pid):
        return True
    if _is_zombie(pid):
        return True
    started = _process_start(pid)
    return started is not None and run_started is not None and started > run_started + 2


def _run_start_pid(instance: DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event is not None else None


def dead_run_message(run_id: str, host: str, pid: int) -> str:
    return (f"Run {run_id}: its process {pid} on {host} no longer exists (killed, e.g. kill -9 or "
            f"the OOM killer, before it could report): marked failed by {STALE_RUNS_SENSOR_NAME} "
            "to free the run slot. Re-run its partitions.")


def dead_worker(instance: DagsterInstance, record: RunRecord, host: str | None = None) -> tuple[str, int] | None:
    """The run's (host, pid) when its recorded process on ``host`` (default: this one) is gone, else None.

    The tag counts only when the run's RUN_START names the same pid: a run retry inherits its
    parent's tags, so until its own worker has started (and re-tagged it) the tag names the
    parent's dead process, not the retry's."""
    run = record.dagster_run
    worker = _parse(run.tags.get(RUN_WORKER_TAG))
    if worker is None or worker[0] != (host or socket.gethostname()):
        return None
    if _run_start_pid(instance, run.run_id) != worker[1]:
        return None  # not started yet (a retry's inherited tag), or tagged by another process than the run's
    started = record.start_time or record.create_timestamp.timestamp()
    return worker if process_gone(worker[1], started) else None


def fail_dead_runs(instance: DagsterInstance, log=None) -> list[str]:
    """Mark failed the in-progress runs whose recorded process on this host is gone; their ids."""
    host = socket.gethostname()
    failed = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=IN_PROGRESS)):
        worker = dead_worker(instance, record, host)
        if worker is None:
            continue
        run = instance.get_run_by_id(record.dagster_run.run_id)  # it may have ended meanwhile
        if run is None or run.status not in IN_PROGRESS:
            continue
        message = dead_run_message(run.run_id, *worker)
        instance.report_run_failed(run, message)
        if log is not None:
            log.warning(message)
        failed.append(run.run_id)
    return failed


@sensor(
    name=STALE_RUNS_SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks failed the STARTING/STARTED runs whose process on this host was killed "
    "(kill -9, OOM killer), which frees the only run slot. Uses the hipages/run-worker tag "
    "(host:pid) that a run's process adds at its start. Requests no runs; on by default.",
)
def hipages_stale_runs_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Evaluate one tick (see :func:`fail_dead_runs`)."""
    started = time.monotonic()
    failed = fail_dead_runs(context.instance, context.log)
    took = f"{time.monotonic() - started:.1f} s"
    if failed:
        return SkipReason(f"marked {len(failed)} run(s) with a dead process failed: {', '.join(failed)} ({took})")
    return SkipReason(f"no in-progress run with a dead process on {socket.gethostname()} ({took})")
