"""The sensors: new or changed source files -> landing runs; a succeeded run -> its sessions refresh.

**Landing files** (``hipages_landing_files_sensor``, every 30 s) requests runs of
``hipages_landing_job``. A tick never opens a file: it lists the files of the ``source``
resource's glob with one ``os.stat`` each (name, size, mtime) and compares them with

- the ``source_files`` dynamic partitions (the paths already known), and
- its cursor, a few hundred bytes whatever the number of files: a watermark ``(mtime_ns, path)``
  of the last file requested, and a digest of the refused paths
  (:mod:`hipages_pipeline.lib.landing_files` has the rules).

A file is **new** when its path is no partition, **changed** when its ``(mtime_ns, path)`` is
above the watermark. It is landed only once **settled**: its mtime is at least
``HIPAGES_LANDING_SETTLE_SECONDS`` (default 60) old, so a file still being written waits for a
later tick (a file that never stops changing is never landed by the sensor). New paths are added
as partitions by the tick itself (``instance.add_dynamic_partitions``: a ``dynamic_partitions_requests``
entry would store every new path in the tick, a megabyte on a first tick over 12,000 files; a
tick that fails after adding them leaves known paths above the watermark, landed by the next
tick), and every file to land goes into one run per
contiguous range of the partitions' order (range tags; one file: ``partition_key``), at most
``MAX_FILES_PER_RUN`` files per run and ``MAX_RUNS_PER_TICK`` runs per tick; the rest waits for
the next tick. A path that cannot be a partition (:func:`hipages_pipeline.cli.landing.unlandable`)
is skipped; the tick logs it when the set of such paths changes. Run keys are a digest of the
files' (path, size, mtime): a replayed tick launches nothing twice, and an unchanged file is
never landed twice by the sensor. A failed landing run is not retried by the sensor (re-execute
it, or run ``hipages-pipeline run``, which compares every file with ``landed_files``).

**Landed hours** (:mod:`hipages_pipeline.defs.automation.hours_sensor`) then runs
``hipages_etl_job`` for the hours those landings touched.

**Sessions refresh** (``hipages_sessions_refresh_sensor``): a session is stored in the hour it
starts and reads ``cleaned_events`` up to 24 h ahead, so new events of hours first .. last can
change the sessions of first-24 h .. last+1 h. After each succeeded run of ``hipages_etl_job``
that materialized ``cleaned_events``, it requests one ranged run of ``user_sessions`` and
``user_sessions_csv`` over those hours, clipped to the partitions' start and to hours that have
ended. Its own runs (sessions only) trigger nothing.

All are off unless ``HIPAGES_AUTOMATION`` turns them on (the refresh follows the schedule and
the landing sensor: on when either is), see :mod:`hipages_pipeline.defs.automation.schedules`.
"""

from __future__ import annotations

import calendar
import hashlib
import os
from datetime import datetime, timedelta

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from hipages_pipeline.cli.landing import unlandable
from hipages_pipeline.defs.automation.jobs import (
    SESSION_ASSETS,
    SESSION_LOOKBACK,
    hipages_etl_job,
    hipages_landing_job,
)
from hipages_pipeline.defs.automation.schedules import automation_enabled
from hipages_pipeline.defs.common import (
    utc_now,  # module attribute: tests fix the clock
)
from hipages_pipeline.defs.partitions import hour_of, partition_key, range_tags, source_file_partitions
from hipages_pipeline.defs.resources import EventSource
from hipages_pipeline.lib.contract import EARLIEST_EVENT_TIME
from hipages_pipeline.lib.landing_files import FileStat, LandingCursor, LandingPlan, plan_landing, stat_glob

SENSOR_NAME = "hipages_landing_files_sensor"
SESSIONS_SENSOR_NAME = "hipages_sessions_refresh_sensor"
SETTLE_ENV = "HIPAGES_LANDING_SETTLE_SECONDS"
DEFAULT_SETTLE_SECONDS = 60
MAX_FILES_PER_RUN = 5000
"""Files per landing run at most (as ``hipages-pipeline run``: the IO manager lists a run's files)."""
MAX_RUNS_PER_TICK = 10
"""Landing runs per tick at most (50,000 files); the rest waits for the next tick."""
CLEANED_EVENTS = AssetKey("cleaned_events")
LANDING_TAGS = {"hipages/trigger": "landing-files-sensor"}


def settle_seconds() -> int:
    """Seconds a file's mtime must be old before it is landed, from ``HIPAGES_LANDING_SETTLE_SECONDS``
    (default 60).

    Raises:
        ValueError: not a whole number of seconds >= 0 (the code location fails to load with it).
    """
    raw = os.environ.get(SETTLE_ENV, "").strip() or str(DEFAULT_SETTLE_SECONDS)
    if not raw.isdigit():
        raise ValueError(f"{SETTLE_ENV}={raw!r}: expected whole seconds >= 0 (how long a source file "
                         "must stay unchanged before the landing-files sensor lands it)")
    return int(raw)


def epoch_ns(now: datetime) -> int:
    """A naive UTC datetime as ns since the epoch (the unit of ``st_mtime_ns``)."""
    return calendar.timegm(now.timetuple()) * 10**9 + now.microsecond * 1000


def landing_request(files: list[FileStat]) -> RunRequest:
    """The landing run of ``files`` (a contiguous range of partitions, in order); its run key is a
    digest of their (path, size, mtime), so the same files as they are now are requested once."""
    identity = "\n".join(f"{f.path}\0{f.size}\0{f.mtime_ns}" for f in files)
    run_key = f"land:{len(files)}:{hashlib.sha1(identity.encode()).hexdigest()[:20]}"
    if len(files) == 1:
        return RunRequest(run_key=run_key, partition_key=files[0].path, tags=LANDING_TAGS)
    return RunRequest(run_key=run_key, tags={**LANDING_TAGS, ASSET_PARTITION_RANGE_START_TAG: files[0].path,
                                             ASSET_PARTITION_RANGE_END_TAG: files[-1].path})


def _summary(plan: LandingPlan, settle: int, max_runs: int) -> str:
    """One line on the tick: counts only, never a list of files."""
    counts = plan.counts
    landing = sum(len(run) for run in plan.runs)
    size = sum(f.size for run in plan.runs for f in run)
    parts = [f"{counts['matched']} file(s) matched: {counts['new']} new, {counts['changed']} changed, "
             f"{counts['unchanged']} unchanged",
             f"landing {landing} ({size / 1e6:,.1f} MB) in {len(plan.runs)} run(s)" if plan.runs else "nothing to land"]
    if counts["deferred"]:
        parts.append(f"{counts['deferred']} wait for the next tick (at most {max_runs} runs per tick)")
    if counts["settling"]:
        parts.append(f"{counts['settling']} changed within the last {settle} s (settling)")
    if counts["refused"]:
        parts.append(f"{counts['refused']} cannot be landed (see the log)")
    if counts["gone"]:
        parts.append(f"{counts['gone']} known path(s) no longer matched")
    return "; ".join(parts)


def evaluate_landing_files(context: SensorEvaluationContext, source: EventSource, settle: int,
                           max_files: int = MAX_FILES_PER_RUN, max_runs: int = MAX_RUNS_PER_TICK) -> SensorResult:
    """One tick of the landing-files sensor (see the module docstring): the new partitions, the
    landing runs (or a skip reason) and the next cursor. Stats files only; never raises for a
    file that vanished or a path that cannot be landed."""
    cursor = LandingCursor.parse(context.cursor)
    files = stat_glob(source.source_glob)
    if not files:
        return SensorResult(skip_reason=f"No source file matches {source.source_glob!r} (resource 'source')",
                            cursor=cursor.dump())
    known = context.instance.get_dynamic_partitions(source_file_partitions.name)
    cutoff = epoch_ns(utc_now()) - settle * 10**9
    plan = plan_landing(files, known, cursor, cutoff, max_files, max_runs, unlandable)
    if plan.refused:
        context.log.warning(f"{len(plan.refused)} source path(s) cannot be landed and are skipped (logged "
                            f"again only when they change), e.g.: {'; '.join(plan.refused[:3])}")
    summary = _summary(plan, settle, max_runs)
    if not plan.runs:
        return SensorResult(skip_reason=summary, cursor=plan.cursor.dump())
    context.log.info(summary)
    if plan.add:
        context.instance.add_dynamic_partitions(source_file_partitions.name, list(plan.add))
    return SensorResult(run_requests=[landing_request(run) for run in plan.runs], cursor=plan.cursor.dump())


def build_landing_files_sensor(running: bool | None = None, minimum_interval_seconds: int = 30,
                               settle: int | None = None, max_files_per_run: int = MAX_FILES_PER_RUN,
                               max_runs_per_tick: int = MAX_RUNS_PER_TICK) -> SensorDefinition:
    """The landing-files sensor of ``hipages_landing_job``.

    Args:
        running: on by default; None: as ``HIPAGES_AUTOMATION`` says for "sensor".
        minimum_interval_seconds: seconds between ticks.
        settle: seconds a file's mtime must be old before it is landed; None: from the environment.
        max_files_per_run: files per landing run at most.
        max_runs_per_tick: landing runs per tick at most.

    Raises:
        ValueError: a bad ``HIPAGES_LANDING_SETTLE_SECONDS`` or ``HIPAGES_AUTOMATION``.
    """
    on = automation_enabled("sensor") if running is None else running
    settle = settle_seconds() if settle is None else settle

    @sensor(
        name=SENSOR_NAME,
        job=hipages_landing_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED,
        description="Watches the source glob (resource `source`) by name, size and mtime only; "
        "adds new files as source_files partitions and lands new or changed files once their "
        f"mtime is {settle} s old (env {SETTLE_ENV}), in ranged runs of at most "
        f"{max_files_per_run} files. Cursor: an mtime watermark. Off unless HIPAGES_AUTOMATION=on "
        "or toggled here.",
    )
    def hipages_landing_files_sensor(context: SensorEvaluationContext, source: EventSource) -> SensorResult:
        """Evaluate one tick (see :func:`evaluate_landing_files`)."""
        return evaluate_landing_files(context, source, settle, max_files_per_run, max_runs_per_tick)

    return hipages_landing_files_sensor


def materialized_hours(run: DagsterRun) -> tuple[datetime, datetime] | None:
    """The first and last hour (naive UTC) whose ``cleaned_events`` the run materialized, from its
    partition tag or Dagster's range tags; None when it did not select ``cleaned_events`` or has
    no partition. An ``asset_selection`` of None or empty is the whole job (``execute_in_process``
    stores an empty one), unless the run selected only asset checks."""
    if run.asset_selection:
        if CLEANED_EVENTS not in run.asset_selection:
            return None
    elif run.asset_check_selection:
        return None
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return hour_of(tags[PARTITION_NAME_TAG]), hour_of(tags[PARTITION_NAME_TAG])
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        return hour_of(tags[ASSET_PARTITION_RANGE_START_TAG]), hour_of(tags[ASSET_PARTITION_RANGE_END_TAG])
    return None


def sessions_refresh_request(run: DagsterRun, now: datetime) -> RunRequest | SkipReason:
    """The run of ``SESSION_ASSETS`` over first-24 h .. last+1 h after ``run`` materialized the
    hours first .. last, clipped to the partitions' start and to the hours ended by ``now`` (naive
    UTC); a SkipReason when the run changed no cleaned_events or nothing is left."""
    hours = materialized_hours(run)
    if hours is None:
        return SkipReason(f"run {run.run_id} materialized no cleaned_events partition")
    start = max(hours[0] - SESSION_LOOKBACK, EARLIEST_EVENT_TIME)
    end = min(hours[1] + timedelta(hours=1), now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1))
    if end < start:
        return SkipReason(f"run {run.run_id}: no ended hour to re-sessionize")
    return RunRequest(run_key=f"sessions:{partition_key(start)}..{partition_key(end)}@{run.run_id}",
                      asset_selection=SESSION_ASSETS,
                      tags={"hipages/trigger": SESSIONS_SENSOR_NAME, "hipages/after-run": run.run_id,
                            **range_tags(start, end)})


def build_sessions_refresh_sensor(running: bool | None = None) -> RunStatusSensorDefinition:
    """The run-status sensor that re-sessionizes after each succeeded run of ``hipages_etl_job``.

    Args:
        running: on by default; None: when ``HIPAGES_AUTOMATION`` turns on the schedule or the
            landing sensor (whose runs it follows).
    """
    on = (automation_enabled("schedule") or automation_enabled("sensor")) if running is None else running

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name=SESSIONS_SENSOR_NAME,
        monitored_jobs=[hipages_etl_job],
        request_job=hipages_etl_job,
        default_status=DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED,
        description="After a run of hipages_etl_job that materialized cleaned_events for hours "
        "first..last succeeds, re-runs user_sessions and user_sessions_csv over first-24h .. "
        "last+1h (ended hours only), as one ranged run. Off unless HIPAGES_AUTOMATION is on.",
    )
    def hipages_sessions_refresh_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        """Evaluate one succeeded run (see :func:`sessions_refresh_request`)."""
        return sessions_refresh_request(context.dagster_run, utc_now())

    return hipages_sessions_refresh_sensor


hipages_landing_files_sensor = build_landing_files_sensor()
hipages_sessions_refresh_sensor = build_sessions_refresh_sensor()
