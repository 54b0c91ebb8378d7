"""The one partitions definition shared by every time-partitioned asset (UTC hours), its backfill
policy, and the run tags of a ranged run."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from dagster import (
    BackfillPolicy,
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    PartitionKeyRange,
    TimeWindow,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hipages_pipeline.lib.contract import EARLIEST_EVENT_TIME

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"
"""strftime format of an hourly partition key (``2017-02-02-20:00``)."""

hourly_partitions = HourlyPartitionsDefinition(start_date=EARLIEST_EVENT_TIME.strftime(PARTITION_KEY_FORMAT),
                                               timezone="UTC")

source_file_partitions = DynamicPartitionsDefinition(name="source_files")
"""The landing assets' partitions: one per source file path (as the source glob matches it), added
by ``hipages-pipeline run`` and the landing-files sensor; a range of them is one landing run."""

# A backfill of a range of hours is one run, so each asset reads the source once per range.
single_run_backfill = BackfillPolicy.single_run()


def partition_key(hour: datetime) -> str:
    """The partition key of a naive UTC hour."""
    return hour.strftime(PARTITION_KEY_FORMAT)


def hour_of(key: str) -> datetime:
    """The naive UTC hour of a partition key."""
    return datetime.strptime(key, PARTITION_KEY_FORMAT)


def range_tags(first: datetime, last: datetime) -> dict[str, str]:
    """Dagster's run tags of a ranged run over the hours ``first .. last`` (inclusive, naive UTC)."""
    return {ASSET_PARTITION_RANGE_START_TAG: partition_key(first), ASSET_PARTITION_RANGE_END_TAG: partition_key(last)}


def naive_utc_window(window: TimeWindow) -> tuple[datetime, datetime]:
    """The run's time window [start, end) as naive UTC datetimes (how the tables store time)."""
    return window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)


def run_ranges(keys: Iterable[str], max_per_run: int | None = None) -> list[PartitionKeyRange]:
    """The runs that materialize the hours ``keys``: Dagster's contiguous partition-key ranges of
    them, each cut into ranges of at most ``max_per_run`` hours (no cap when None)."""
    subset = hourly_partitions.empty_subset().with_partition_keys(sorted(set(keys)))
    runs = []
    for whole in subset.get_partition_key_ranges(hourly_partitions):
        in_range = hourly_partitions.get_partition_keys_in_range(whole)
        step = max_per_run or len(in_range)
        runs += [PartitionKeyRange(in_range[i], in_range[min(i + step, len(in_range)) - 1])
                 for i in range(0, len(in_range), step)]
    return runs
