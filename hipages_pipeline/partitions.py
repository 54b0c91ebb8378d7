"""The one partitions definition shared by every time-partitioned asset: UTC hours."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from dagster import BackfillPolicy, HourlyPartitionsDefinition, TimeWindow

PARTITIONS_START = "2017-01-01-00:00"
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"
"""strftime format of an hourly partition key (``2017-02-02-20:00``)."""
EARLIEST_EVENT_TIME = datetime(2017, 1, 1)
"""Events before the first partition cannot be stored: they are quarantined as out of range."""

hourly_partitions = HourlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

# A backfill of a range of hours is one run, so each asset reads the source once per range.
single_run_backfill = BackfillPolicy.single_run()


def naive_utc_window(window: TimeWindow) -> tuple[datetime, datetime]:
    """The run's time window [start, end) as naive UTC datetimes (how the tables store time)."""
    return window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)


def contiguous_hour_ranges(hours: Iterable[datetime], max_hours: int | None = None) -> list[tuple[datetime, datetime]]:
    """Group hours into sorted (first, last) ranges of consecutive hours, each at most
    ``max_hours`` long when given (the per-run partition cap)."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in sorted(set(hours)):
        if (ranges and hour - ranges[-1][1] == timedelta(hours=1)
                and (max_hours is None or hour - ranges[-1][0] < timedelta(hours=max_hours))):
            ranges[-1] = (ranges[-1][0], hour)
        else:
            ranges.append((hour, hour))
    return ranges
