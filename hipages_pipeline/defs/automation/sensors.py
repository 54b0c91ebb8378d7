"""The sensors: new landing lines -> runs of their hours; a succeeded run -> its sessions refresh.

**Landing files** (``hipages_landing_files_sensor``, every 30 s): reads, in each file of the
``source`` resource's glob, only the bytes after the offset stored in its cursor
(:mod:`hipages_pipeline.lib.landing_files` describes the cursor, rotation and half-written
lines), classifies the new lines by the pipeline's own rules
(:func:`hipages_pipeline.lib.sql.scan.source_hours`) and requests

- one run of ``hipages_etl_job`` per run of contiguous UTC hours they fall in: one hour as a
  partition run, several as one ranged run (Dagster's range tags). Each run re-reads all the
  files for its hours, so late events re-materialize their hour whole (writes are idempotent);
- when the new lines have no usable event time at all, one run of ``rejected_without_hour``
  alone (any run of ``hipages_etl_job`` rebuilds it too, so not separately then).

Hours that have not ended yet wait in the cursor (``pending``) until a tick after they end. The
run keys derive from the new cursor, so a tick replayed after a crash launches nothing twice.

**Sessions refresh** (``hipages_sessions_refresh_sensor``): a session is stored in the hour it
starts and reads ``cleaned_events`` up to 24 h ahead, so new events of hours first .. last can
change the sessions of first-24 h .. last+1 h. After each succeeded run of ``hipages_etl_job``
that materialized ``cleaned_events``, it requests one ranged run of ``user_sessions`` and
``user_sessions_csv`` over those hours, clipped to the partitions' start and to hours that have
ended. Its own runs (sessions only) trigger nothing.

Both are off unless ``HIPAGES_AUTOMATION`` turns them on (the refresh follows the schedule and
the landing sensor: on when either is), see :mod:`hipages_pipeline.defs.automation.schedules`.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    PartitionKeyRange,
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

from hipages_pipeline.defs.automation.jobs import SESSION_ASSETS, SESSION_LOOKBACK, hipages_etl_job
from hipages_pipeline.defs.automation.schedules import automation_enabled
from hipages_pipeline.defs.common import (
    utc_now,  # module attribute: tests fix the clock
)
from hipages_pipeline.defs.partitions import hour_of, partition_key, range_tags, run_ranges
from hipages_pipeline.defs.resources import EventSource
from hipages_pipeline.lib.contract import EARLIEST_EVENT_TIME
from hipages_pipeline.lib.events.reader import SourceReadError
from hipages_pipeline.lib.landing_files import FoundHours, LandingCursor, found_hours, scan_files

SENSOR_NAME = "hipages_landing_files_sensor"
SESSIONS_SENSOR_NAME = "hipages_sessions_refresh_sensor"
DEFAULT_MAX_BYTES_PER_TICK = 128 * 1024 * 1024
QUARANTINE_WITHOUT_HOUR = AssetKey("rejected_without_hour")
CLEANED_EVENTS = AssetKey("cleaned_events")
LANDING_TAGS = {"hipages/trigger": "landing-files-sensor"}


def _run_request(keys: PartitionKeyRange, run_key: str) -> RunRequest:
    """A partition run for one hour, a ranged run (one run, single-run backfill) for several."""
    if keys.start == keys.end:
        return RunRequest(run_key=f"{keys.start}@{run_key}", partition_key=keys.start, tags=LANDING_TAGS)
    return RunRequest(run_key=f"{keys.start}..{keys.end}@{run_key}",
                      tags={**LANDING_TAGS, **range_tags(hour_of(keys.start), hour_of(keys.end))})


def _scan(context: SensorEvaluationContext, files: list[Path], source: EventSource, cursor: LandingCursor,
          max_bytes: int) -> tuple[LandingCursor, FoundHours]:
    """Read the new lines of ``files``; returns the next cursor (``pending`` unchanged) and their hours.

    Raises:
        Failure: a new file cannot be read.
    """
    settings = source.settings()
    with tempfile.TemporaryDirectory(prefix="hipages_sensor_") as tmp:
        states, found = scan_files(files, cursor, max_bytes, settings, Path(tmp), partition_key)
        for new in found:
            context.log.info(f"{new.source}: {new.reason}, {new.lines} new line(s)")
        for path in sorted(set(cursor.files) - {str(p) for p in files}):
            context.log.info(f"{path}: gone from the landing folder; dropped from the cursor")
        try:
            hours = found_hours(found, settings, partition_key)
        except SourceReadError as exc:
            raise Failure(description=f"landing-files sensor: {exc}") from exc
    return LandingCursor(files=states, pending=list(cursor.pending)), hours


def _skip_reason(cursor: LandingCursor, hours: FoundHours, n_files: int, glob: str) -> str:
    """Why a tick requests nothing."""
    waiting = ", ".join(cursor.pending)
    if cursor.pending and hours.lines_read:
        return f"{hours.lines_read} new line(s), all in hours that have not ended: {waiting}"
    if cursor.pending:
        return f"no new lines in {n_files} file(s); waiting for hour(s) to end: {waiting}"
    return f"no new lines in {n_files} file(s) matching {glob}"


def evaluate_landing_files(context: SensorEvaluationContext, source: EventSource,
                           max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK) -> SensorResult:
    """One tick of the landing-files sensor (see the module docstring).

    Returns the run requests (or a skip reason) and the next cursor. Raises ``Failure`` when a
    new file cannot be read (the cursor is then not advanced).
    """
    cursor = LandingCursor.parse(context.cursor)
    try:
        files = source.files()
    except Failure as exc:  # nothing matches the glob
        return SensorResult(skip_reason=exc.description, cursor=cursor.dump())
    new_cursor, hours = _scan(context, files, source, cursor, max_bytes_per_tick)
    now = utc_now()
    wanted = sorted(hours.keys | set(new_cursor.pending))
    ended = [key for key in wanted if hour_of(key) + timedelta(hours=1) <= now]
    new_cursor.pending = [key for key in wanted if key not in ended]
    dumped = new_cursor.dump()
    run_key = hashlib.sha1(dumped.encode()).hexdigest()[:16]
    requests = [_run_request(keys, run_key) for keys in run_ranges(ended)]
    if not requests and hours.lines_read > hours.placed:
        requests.append(RunRequest(run_key=f"rejected_without_hour@{run_key}",
                                   asset_selection=[QUARANTINE_WITHOUT_HOUR], tags=LANDING_TAGS))
    if not requests:
        return SensorResult(skip_reason=_skip_reason(new_cursor, hours, len(files), source.source_glob), cursor=dumped)
    waiting = f"; waiting for the hour(s) to end: {', '.join(new_cursor.pending)}" if new_cursor.pending else ""
    context.log.info(f"{hours.lines_read} new line(s) in {hours.files} file(s): {hours.placed} in hours "
                     f"{', '.join(sorted(hours.keys)) or '-'}, {hours.lines_read - hours.placed} without "
                     f"an hour; {len(requests)} run(s) requested{waiting}")
    return SensorResult(run_requests=requests, cursor=dumped)


def build_landing_files_sensor(running: bool | None = None, minimum_interval_seconds: int = 30,
                               max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK) -> SensorDefinition:
    """The landing-files sensor of ``hipages_etl_job``.

    Args:
        running: on by default; None: as ``HIPAGES_AUTOMATION`` says for "sensor".
        minimum_interval_seconds: seconds between ticks.
        max_bytes_per_tick: new bytes read per tick at most (the rest on the next ticks).
    """
    on = automation_enabled("sensor") if running is None else running

    @sensor(
        name=SENSOR_NAME,
        job=hipages_etl_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED,
        description="Watches the source glob (resource `source`); requests runs for exactly the "
        "hours that new or appended lines fall in (contiguous hours as one ranged run), and a "
        "run of rejected_without_hour when the new lines have no usable event time. Cursor: "
        "byte offset per file. Off unless HIPAGES_AUTOMATION=on or toggled here.",
    )
    def hipages_landing_files_sensor(context: SensorEvaluationContext, source: EventSource) -> SensorResult:
        """Evaluate one tick (see :func:`evaluate_landing_files`)."""
        return evaluate_landing_files(context, source, max_bytes_per_tick)

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
