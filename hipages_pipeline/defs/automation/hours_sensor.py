"""The landed-hours sensor: new ``landed_files`` materializations -> hourly runs of their hours.

``hipages_landed_hours_sensor`` (every 30 s, on when the landing-files sensor is) reads the
``landed_files`` materializations stored after its cursor (Dagster's public
``fetch_materializations``, oldest first, at most ``MAX_RECORDS_PER_TICK`` a tick), whatever
launched the landing (the landing-files sensor, the UI, a backfill). Their ``hours`` metadata
lists the UTC hours whose landed lines changed; a ranged landing run stores one event per file
with the same metadata, so each distinct ``hours`` value is expanded once.

It requests ``hipages_etl_job`` for those hours that have ended: contiguous hours as one ranged
run of at most ``MAX_HOURS_PER_RUN`` hours, at most ``MAX_RUNS_PER_TICK`` runs a tick. Hours that
have not ended (they have no partition yet), and ended ones beyond the runs cap, wait in the
cursor (``pending``, as ``first..last`` ranges). The cursor also holds the last storage id read.
Run keys are the hours plus a digest of the tick's input cursor, so a replayed tick launches
nothing twice. After each of these runs, ``hipages_sessions_refresh_sensor`` re-sessionizes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from hipages_pipeline.cli.landing import expand_hours
from hipages_pipeline.defs.automation.jobs import hipages_etl_job
from hipages_pipeline.defs.automation.schedules import automation_enabled
from hipages_pipeline.defs.common import (
    utc_now,  # module attribute: tests fix the clock
)
from hipages_pipeline.defs.partitions import hour_of, range_tags, run_ranges

HOURS_SENSOR_NAME = "hipages_landed_hours_sensor"
LANDED_FILES = AssetKey("landed_files")
PAGE_SIZE = 1000
MAX_RECORDS_PER_TICK = 20_000
"""Materialization events read per tick at most (a landing run of n files stores n events)."""
MAX_HOURS_PER_RUN = 24
MAX_RUNS_PER_TICK = 50
HOURS_TAGS = {"hipages/trigger": "landed-hours-sensor"}


def compact(keys: set[str]) -> list[str]:
    """Hour keys as ``key`` or ``first..last`` ranges (the format of ``landed_files``' ``hours``)."""
    return [r.start if r.start == r.end else f"{r.start}..{r.end}" for r in run_ranges(keys)]


def parse_cursor(text: str | None) -> tuple[int | None, set[str]]:
    """(last storage id read, pending hour keys); an empty or unreadable cursor starts from the
    first materialization."""
    try:
        data = json.loads(text) if text else {}
        return data.get("after"), expand_hours(data.get("pending", []))
    except (ValueError, TypeError, AttributeError):
        return None, set()


def landed_hours(context: SensorEvaluationContext, after: int | None) -> tuple[int | None, set[str], int]:
    """The hours in the ``hours`` metadata of the ``landed_files`` materializations stored after
    ``after``: (last storage id read, hour keys, events read)."""
    seen: set[str] = set()
    keys: set[str] = set()
    read = 0
    while read < MAX_RECORDS_PER_TICK:
        page = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=LANDED_FILES, after_storage_id=after), limit=PAGE_SIZE, ascending=True)
        for record in page.records:
            after, read = record.storage_id, read + 1
            hours = record.asset_materialization.metadata.get("hours") if record.asset_materialization else None
            text = json.dumps(hours.value) if hours is not None else "[]"
            if text not in seen:
                seen.add(text)
                keys |= expand_hours(hours.value if hours is not None else [])
        if not page.has_more or not page.records:
            break
    return after, keys, read


def evaluate_landed_hours(context: SensorEvaluationContext) -> SensorResult:
    """One tick (see the module docstring): hourly runs for the ended hours, the rest pending."""
    after, pending = parse_cursor(context.cursor)
    input_digest = hashlib.sha1((context.cursor or "").encode()).hexdigest()[:12]
    after, keys, read = landed_hours(context, after)
    now = utc_now()
    wanted = keys | pending
    ended = {key for key in wanted if hour_of(key) + timedelta(hours=1) <= now}
    ranges = run_ranges(ended, MAX_HOURS_PER_RUN)
    requested = ranges[:MAX_RUNS_PER_TICK]
    done = {key for r in requested for key in expand_hours([f"{r.start}..{r.end}"])}
    left = wanted - done
    cursor = json.dumps({"after": after, "pending": compact(left)}, separators=(",", ":"))
    requests = [RunRequest(run_key=f"hours:{r.start}..{r.end}@{input_digest}",
                           tags={**HOURS_TAGS, **range_tags(hour_of(r.start), hour_of(r.end))}) for r in requested]
    waiting = f"; waiting: {', '.join(compact(left))}" if left else ""
    summary = (f"{read} landed_files event(s), {len(keys)} hour(s) touched; {len(ended)} ended hour(s) "
               f"-> {len(requests)} run(s){waiting}")
    if not requests:
        return SensorResult(skip_reason=summary[:1000], cursor=cursor)
    context.log.info(summary[:1000])
    return SensorResult(run_requests=requests, cursor=cursor)


def build_landed_hours_sensor(running: bool | None = None, minimum_interval_seconds: int = 30) -> SensorDefinition:
    """The landed-hours sensor of ``hipages_etl_job``.

    Args:
        running: on by default; None: as ``HIPAGES_AUTOMATION`` says for "sensor".
        minimum_interval_seconds: seconds between ticks.
    """
    on = automation_enabled("sensor") if running is None else running

    @sensor(
        name=HOURS_SENSOR_NAME,
        job=hipages_etl_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED,
        description="After landing runs (landed_files materializations), requests hipages_etl_job for "
        f"the hours they touched once those hours have ended: ranged runs of at most {MAX_HOURS_PER_RUN} "
        "hours. Off unless HIPAGES_AUTOMATION=on or toggled here.",
    )
    def hipages_landed_hours_sensor(context: SensorEvaluationContext) -> SensorResult:
        """Evaluate one tick (see :func:`evaluate_landed_hours`)."""
        return evaluate_landed_hours(context)

    return hipages_landed_hours_sensor


hipages_landed_hours_sensor = build_landed_hours_sensor()
