"""Clean and aggregate: ``raw_events`` -> ``cleaned_events`` + ``duplicate_events`` -> ``hourly_activity``."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetOut, Output, asset, multi_asset

from hipages_pipeline.assets.common import GROUP, OWNERS, preview
from hipages_pipeline.checks import (
    CLEAN_CHECKS,
    HOURLY_CHECKS,
    check_hourly_reconciles,
    clean_check_results,
)
from hipages_pipeline.events.tables import clean_events
from hipages_pipeline.events.tables import hourly_activity as aggregate_hourly
from hipages_pipeline.partitions import (
    hourly_partitions,
    naive_utc_window,
    single_run_backfill,
)
from hipages_pipeline.resources import QualityThresholds
from hipages_pipeline.schemas import CLEANED_EVENTS, DUPLICATE_EVENTS, HOURLY_ACTIVITY

_CLEANED_DESCRIPTION = """One row per de-duplicated event, by the data contract's rules.

Columns: event_id, user_id (user.id as text), session_id (VARCHAR), time_stamp (TIMESTAMP, UTC),
url_level1 (registrable domain), url_level2, url_level3 (first and second path segments, NULL
when absent), activity (action trimmed), ip_anonymised (/24 or /64, NULL when invalid),
ip_valid (BOOLEAN), source_file and line_number (lineage to the kept source line).
"""

_DUPLICATES_DESCRIPTION = """Source lines dropped as duplicates: an event_id already seen in the same UTC hour.

duplicate_kind is `retry` (same payload as the kept line) or `conflict` (different payload).
Columns: event_id, time_stamp (UTC), duplicate_kind, source_file, line_number,
kept_source_file, kept_line_number.
"""


@multi_asset(
    outs={
        "cleaned_events": AssetOut(description=_CLEANED_DESCRIPTION, group_name=GROUP, owners=OWNERS,
                                   kinds={"duckdb"},
                                   metadata={"partition_expr": "time_stamp", "dagster/column_schema": CLEANED_EVENTS}),
        "duplicate_events": AssetOut(description=_DUPLICATES_DESCRIPTION, group_name=GROUP, owners=OWNERS,
                                     kinds={"duckdb"},
                                     metadata={"partition_expr": "time_stamp", "dagster/column_schema": DUPLICATE_EVENTS}),
    },
    ins={"raw_events": AssetIn("raw_events")},
    check_specs=CLEAN_CHECKS,
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    name="clean_events_asset",
)
def clean_events_asset(context: AssetExecutionContext, raw_events: pd.DataFrame,
                       quality: QualityThresholds) -> Iterator:
    """Normalise the window's raw events and drop duplicate lines (see the two descriptions)."""
    cleaned, duplicates = clean_events(raw_events)
    context.log.info(f"{len(raw_events)} raw events -> {len(cleaned)} cleaned, {len(duplicates)} duplicates")
    yield Output(cleaned, output_name="cleaned_events", metadata={
        "rows": len(cleaned),
        "distinct_users": int(cleaned["user_id"].nunique()),
        "duplicates": len(duplicates),
        "preview": preview(cleaned),
    })
    yield Output(duplicates, output_name="duplicate_events", metadata={
        "duplicates": len(duplicates),
        "retries": int((duplicates["duplicate_kind"] == "retry").sum()),
        "conflicts": int((duplicates["duplicate_kind"] == "conflict").sum()),
    })
    yield from clean_check_results(
        raw_events, cleaned, duplicates, naive_utc_window(context.partition_time_window),
        quality.known_activities, quality.expected_domains, quality.max_invalid_ip_share,
    )


@asset(
    ins={"cleaned_events": AssetIn("cleaned_events")},
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    group_name=GROUP, owners=OWNERS, kinds={"duckdb"},
    metadata={"partition_expr": "strptime(time_bucket, '%Y%m%d%H')", "dagster/column_schema": HOURLY_ACTIVITY},
    check_specs=HOURLY_CHECKS,
)
def hourly_activity(context: AssetExecutionContext, cleaned_events: pd.DataFrame) -> Iterator:
    """Events per (time_bucket, url_level1, url_level2, activity), the challenge's hourly grain.

    Columns: time_bucket (VARCHAR YYYYMMDDHH, UTC hour), url_level1, url_level2 (NULL is its own
    group), activity (VARCHAR), activity_count (BIGINT, events), user_count (BIGINT, distinct
    user_id). Computed from ``cleaned_events``.
    """
    hourly = aggregate_hourly(cleaned_events)
    yield Output(hourly, metadata={
        "rows": len(hourly),
        "events": int(hourly["activity_count"].sum()),
        "distinct_users": int(cleaned_events["user_id"].nunique()),
        "preview": preview(hourly),
    })
    yield check_hourly_reconciles(hourly, cleaned_events)
