"""The hourly schedule: materialize the last completed UTC hour, a little after it ends.

Late events are the reason for the delay: the receiver may still be writing events of hour H
for a few minutes after H ends. With the default delay of 15 minutes the schedule ticks at
``HH:15`` UTC and materializes the hour ``HH-1:00 .. HH:00``; with a delay of 90 minutes it ticks
at ``HH:30`` and materializes the hour that ended 90 minutes earlier. Events that arrive even
later are picked up by the landing-files sensor (:mod:`hipages_pipeline.defs.automation.sensors`), which
re-materializes exactly the hours they belong to.

Automation is off by default. One switch turns it on, before ``make dev``::

    HIPAGES_AUTOMATION=on make dev          # schedule and sensor
    HIPAGES_AUTOMATION=sensor make dev      # only the sensor ("schedule" for only the schedule)

or toggle them in the UI (Automation page); the UI toggle is stored in the instance and wins
over the default from then on.

=================================  =======  =================================================
environment variable               default  meaning
=================================  =======  =================================================
``HIPAGES_AUTOMATION``             off      ``on``/``all``, or a comma list of ``schedule``,
                                            ``sensor``: what starts running by default
``HIPAGES_SCHEDULE_DELAY_MINUTES`` 15       minutes after an hour ends before it is
                                            materialized (0 .. 1439)
=================================  =======  =================================================
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from hipages_pipeline.defs.automation.jobs import (
    hipages_etl_job,
    session_refresh_request,
)
from hipages_pipeline.defs.partitions import PARTITION_KEY_FORMAT

AUTOMATION_ENV = "HIPAGES_AUTOMATION"
DELAY_ENV = "HIPAGES_SCHEDULE_DELAY_MINUTES"
DEFAULT_DELAY_MINUTES = 15
SCHEDULE_NAME = "hipages_hourly_schedule"

_ON = {"1", "on", "true", "yes", "all"}
_OFF = {"", "0", "off", "false", "no", "none"}
_KINDS = {"schedule", "sensor"}


def automation_enabled(kind: str) -> bool:
    """Whether ``HIPAGES_AUTOMATION`` turns ``kind`` ("schedule" or "sensor") on by default.

    Raises:
        ValueError: the variable holds something else than on/off or a list of the two kinds
            (the code location then fails to load with this message, rather than guessing).
    """
    value = os.environ.get(AUTOMATION_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    kinds = {part.strip() for part in value.split(",") if part.strip()}
    if not kinds <= _KINDS:
        raise ValueError(f"{AUTOMATION_ENV}={value!r}: expected on, off, or a comma list of "
                         f"{sorted(_KINDS)}; unknown: {sorted(kinds - _KINDS)}")
    return kind in kinds


def schedule_delay_minutes() -> int:
    """The delay from ``HIPAGES_SCHEDULE_DELAY_MINUTES`` (default 15).

    Raises:
        ValueError: not an integer in 0 .. 1439 (less than a day).
    """
    raw = os.environ.get(DELAY_ENV, "").strip() or str(DEFAULT_DELAY_MINUTES)
    try:
        delay = int(raw)
    except ValueError:
        delay = -1
    if not 0 <= delay < 24 * 60:
        raise ValueError(f"{DELAY_ENV}={raw!r}: expected whole minutes in 0 .. 1439")
    return delay


def hour_to_materialize(tick_time: datetime, delay_minutes: int) -> datetime:
    """The UTC hour (its start, naive) that ended at least ``delay_minutes`` before ``tick_time``.

    ``tick_time`` is aware (any zone) or naive UTC. At 10:15 UTC with a delay of 15 minutes this
    is 09:00 (the hour 09:00 .. 10:00).
    """
    if tick_time.tzinfo is not None:
        tick_time = tick_time.astimezone(timezone.utc).replace(tzinfo=None)
    ended_by = tick_time - timedelta(minutes=delay_minutes)
    return ended_by.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def build_hourly_schedule(delay_minutes: int | None = None, running: bool | None = None) -> ScheduleDefinition:
    """The hourly schedule of ``hipages_etl_job`` (defaults from the environment, see module doc).

    Args:
        delay_minutes: minutes after an hour ends before the tick that materializes it.
        running: whether the schedule is on by default (``DefaultScheduleStatus.RUNNING``).
    """
    delay = schedule_delay_minutes() if delay_minutes is None else delay_minutes
    on = automation_enabled("schedule") if running is None else running

    @schedule(
        name=SCHEDULE_NAME,
        job=hipages_etl_job,
        cron_schedule=f"{delay % 60} * * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING if on else DefaultScheduleStatus.STOPPED,
        description=f"Every hour at :{delay % 60:02d} UTC, materialize the hour that ended {delay} "
        f"minutes earlier (delay: env {DELAY_ENV}). Off unless {AUTOMATION_ENV}=on or toggled here.",
    )
    def hipages_hourly_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        """One run for the last completed hour (run key = partition key), then one that
        re-sessionizes the 24 hours before it, whose sessions may continue into it."""
        tick = context.scheduled_execution_time or datetime.now(timezone.utc)
        hour = hour_to_materialize(tick, delay)
        key = hour.strftime(PARTITION_KEY_FORMAT)
        tags = {"hipages/trigger": "schedule"}
        now = tick.astimezone(timezone.utc).replace(tzinfo=None) if tick.tzinfo else tick
        refresh = session_refresh_request(hour, hour, now, key, tags)
        return [RunRequest(run_key=key, partition_key=key, tags=tags)] + ([refresh] if refresh else [])

    return hipages_hourly_schedule


hipages_hourly_schedule = build_hourly_schedule()
