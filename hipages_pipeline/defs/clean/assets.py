"""Clean and aggregate: ``raw_events`` -> ``cleaned_events`` + ``duplicate_events`` -> ``hourly_activity``."""

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetOut, Output, multi_asset

from hipages_pipeline.defs.check_helpers import per_hour, per_hour_check
from hipages_pipeline.defs.clean.checks import (
    CLEAN_CHECKS,
    HOURLY_CHECKS,
    check_hourly_reconciles,
    clean_check_results,
)
from hipages_pipeline.defs.common import GROUP, OWNERS, describe, hourly_table_asset, table_metadata
from hipages_pipeline.defs.io_manager import DuckDBQuery
from hipages_pipeline.defs.partitions import (
    hour_of,
    hourly_partitions,
    naive_utc_window,
    single_run_backfill,
)
from hipages_pipeline.defs.resources import DuckDBWarehouse, QualityThresholds
from hipages_pipeline.lib.contract import (
    CLEANED_EVENTS,
    DUPLICATE_EVENTS,
    HOURLY_ACTIVITY,
)
from hipages_pipeline.lib.events.ips import other_forms
from hipages_pipeline.lib.events.urls import split_urls
from hipages_pipeline.lib.sql.transforms import (
    cleaned_sql,
    duplicates_sql,
    hourly_activity_sql,
)


@multi_asset(
    outs={
        "cleaned_events": AssetOut(description=describe(CLEANED_EVENTS), group_name=GROUP, owners=OWNERS,
                                   kinds={"duckdb"},
                                   metadata=table_metadata(CLEANED_EVENTS)),
        "duplicate_events": AssetOut(description=describe(DUPLICATE_EVENTS), group_name=GROUP, owners=OWNERS,
                                     kinds={"duckdb"},
                                     metadata=table_metadata(DUPLICATE_EVENTS)),
    },
    ins={"raw_events": AssetIn("raw_events")},
    check_specs=CLEAN_CHECKS,
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    name="clean_events_asset",
)
def clean_events_asset(context: AssetExecutionContext, raw_events: DuckDBQuery, quality: QualityThresholds,
                       warehouse: DuckDBWarehouse) -> Iterator:
    """Normalise the window's raw events and drop duplicate lines (see the two descriptions).

    Runs inside DuckDB, table to table: the duplicates are stored first, then the cleaned events
    are the raw events without them. URLs are split in Python once per distinct URL (cached), IPv4
    addresses anonymised in SQL (other forms by ``ipaddress``, once per distinct value).
    """
    window = naive_utc_window(context.partition_time_window)
    with warehouse.connect() as con:
        urls = [url for (url,) in con.execute(f"SELECT DISTINCT url FROM ({raw_events.sql})").fetchall()]
        url_map = pa.Table.from_pandas(split_urls(pd.Series(urls, dtype="object")), preserve_index=False)
        other_ips = pa.Table.from_pandas(other_forms(con, raw_events.sql), preserve_index=False)
        duplicates = DuckDBQuery(duplicates_sql(raw_events.sql))
        yield Output(duplicates, output_name="duplicate_events")
        stored_duplicates = warehouse.slice_sql("duplicate_events", "time_stamp", window)
        cleaned = DuckDBQuery(cleaned_sql(raw_events.sql, stored_duplicates, "url_map", "other_ips"),
                              arrow={"url_map": url_map, "other_ips": other_ips})
        yield Output(cleaned, output_name="cleaned_events", metadata={"distinct_urls": len(urls)})
        context.log.info(f"{cleaned.stored['rows']} cleaned events, {duplicates.stored['rows']} duplicates")
        yield from per_hour(context, clean_check_results(
            con, raw_events.sql, warehouse.slice_sql("cleaned_events", "time_stamp", window), stored_duplicates,
            cleaned.stored["rows"], window, quality.known_activities, quality.expected_domains,
            quality.max_invalid_ip_share,
        ))


HOURLY_NOTES = "The challenge's hourly grain, computed from ``cleaned_events`` in DuckDB."
"""The asset description's notes after the contract's columns."""


@hourly_table_asset(HOURLY_ACTIVITY, HOURLY_NOTES, HOURLY_CHECKS, ins={"cleaned_events": AssetIn("cleaned_events")})
def hourly_activity(context: AssetExecutionContext, cleaned_events: DuckDBQuery,
                    warehouse: DuckDBWarehouse) -> Iterator:
    """Aggregate the window's cleaned events per hourly group in SQL, then check the stored rows
    reconcile with them."""
    window = naive_utc_window(context.partition_time_window)
    yield Output(DuckDBQuery(hourly_activity_sql(cleaned_events.sql)))
    with warehouse.connect() as con:
        yield from per_hour_check(context, check_hourly_reconciles(
            con, warehouse.slice_sql("hourly_activity", HOURLY_ACTIVITY.partition_expr, window), cleaned_events.sql,
            [hour_of(key) for key in context.partition_keys]))
