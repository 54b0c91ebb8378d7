"""The hourly schedule, built by Dagster's ``build_schedule_from_partitioned_job`` from
``hipages_etl_job``: at ``HH:MM`` UTC (MM = the delay) it materializes the last hour that has
ended, ``HH-1:00 .. HH:00``, as a partition run (run key = partition key).

Late events are the reason for the delay: the receiver may still be writing events of hour H
for a few minutes after H ends. The primitive always runs the last ended hour and has no offset,
so the delay is 0 .. 59 minutes; a longer one is refused (ValueError) rather than run the
wrong hour. Events that arrive later are picked up by the landing-files sensor, and the
sessions refresh follows every run (both in :mod:`hipages_pipeline.defs.automation.sensors`).

Automation is off by default. One switch turns it on, before ``make dev``::

    HIPAGES_AUTOMATION=on make dev          # schedule and landing-files sensor
    HIPAGES_AUTOMATION=sensor make dev      # only the sensor ("schedule" for only the schedule)

(the sessions refresh sensor is on when either is),

or toggle them in the UI (Automation page); the UI toggle is stored in the instance and wins
over the default from then on.

=================================  =======  =================================================
environment variable               default  meaning
=================================  =======  =================================================
``HIPAGES_AUTOMATION``             off      ``on``/``all``, or a comma list of ``schedule``,
                                            ``sensor``: what starts running by default
``HIPAGES_SCHEDULE_DELAY_MINUTES`` 15       minutes after an hour ends before it is
                                            materialized (0 .. 59)
=================================  =======  =================================================
"""

from __future__ import annotations

import os

from dagster import (
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
)
from dagster._core.definitions.partitions.partitioned_schedule import (
    UnresolvedPartitionedAssetScheduleDefinition,
)

from hipages_pipeline.defs.automation.jobs import hipages_etl_job

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
    """The delay in minutes from ``HIPAGES_SCHEDULE_DELAY_MINUTES`` (default 15).

    Raises:
        ValueError: not a whole number of minutes in 0 .. 59 (the minute of the hour of the tick).
    """
    raw = os.environ.get(DELAY_ENV, "").strip() or str(DEFAULT_DELAY_MINUTES)
    try:
        delay = int(raw)
    except ValueError:
        delay = -1
    return _check_delay(delay, raw)


def _check_delay(delay: int, raw: object) -> int:
    """``delay`` when it is in 0 .. 59, else a one-line ValueError naming the variable."""
    if not 0 <= delay < 60:
        raise ValueError(f"{DELAY_ENV}={raw!r}: expected whole minutes in 0 .. 59 (the schedule "
                         "runs the last ended hour at that minute; longer delays are not supported)")
    return delay


def build_hourly_schedule(delay_minutes: int | None = None, running: bool | None = None
                          ) -> UnresolvedPartitionedAssetScheduleDefinition | ScheduleDefinition:
    """The hourly schedule of ``hipages_etl_job`` (defaults from the environment, see module doc).

    Args:
        delay_minutes: minutes (0 .. 59) after an hour ends before the tick that materializes it.
        running: whether the schedule is on by default (``DefaultScheduleStatus.RUNNING``).

    Raises:
        ValueError: a delay outside 0 .. 59.
    """
    delay = schedule_delay_minutes() if delay_minutes is None else _check_delay(delay_minutes, delay_minutes)
    on = automation_enabled("schedule") if running is None else running
    return build_schedule_from_partitioned_job(
        hipages_etl_job,
        name=SCHEDULE_NAME,
        minute_of_hour=delay,
        default_status=DefaultScheduleStatus.RUNNING if on else DefaultScheduleStatus.STOPPED,
        tags={"hipages/trigger": "schedule"},
        description=f"Every hour at :{delay:02d} UTC, materialize the hour that has just ended "
        f"(delay: env {DELAY_ENV}). Off unless {AUTOMATION_ENV}=on or toggled here.",
    )


hipages_hourly_schedule = build_hourly_schedule()
