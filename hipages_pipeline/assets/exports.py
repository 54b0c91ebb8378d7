"""Exports: the analysts' CSV files, one per hourly partition.

``event_table_csv``     -> ``<output_dir>/event_table/<YYYYMMDDHH>.csv``
``hourly_activity_csv`` -> ``<output_dir>/hourly_activity/<YYYYMMDDHH>.csv``

Every partition of the run gets its file, header-only when the hour has no rows, so a file's
presence means "this hour was processed".
"""

from collections.abc import Callable
from datetime import datetime

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    asset,
)

from hipages_pipeline.assets.common import GROUP, OWNERS, preview
from hipages_pipeline.checks import check_csv_row_counts, csv_check_spec
from hipages_pipeline.events.csv_files import count_csv_rows, write_csv_atomic
from hipages_pipeline.events.tables import event_table
from hipages_pipeline.partitions import (
    PARTITION_KEY_FORMAT,
    hourly_partitions,
    single_run_backfill,
)
from hipages_pipeline.resources import OutputLocation
from hipages_pipeline.schemas import EVENT_TABLE_CSV, HOURLY_ACTIVITY_CSV


def bucket_of(partition_key: str) -> str:
    """``2017-02-02-20:00`` -> ``2017020220`` (the hour's file name and time_bucket)."""
    return datetime.strptime(partition_key, PARTITION_KEY_FORMAT).strftime("%Y%m%d%H")


def csv_export_asset(upstream: str, name: str, schema) -> Callable:
    """The ``@asset`` decorator of a CSV export: hourly, fed by ``upstream``, with its column
    schema and the ``csv_row_count_matches_table`` check."""
    return asset(
        name=name, ins={upstream: AssetIn(upstream)},
        partitions_def=hourly_partitions, backfill_policy=single_run_backfill,
        group_name=GROUP, owners=OWNERS, kinds={"csv"},
        metadata={"dagster/column_schema": schema},
        check_specs=[csv_check_spec(name)],
    )


def export_per_partition(context: AssetExecutionContext, asset_name: str, frame: pd.DataFrame, buckets: pd.Series,
            output: OutputLocation, directory: str) -> MaterializeResult:
    """Write one CSV per partition of the run; read each back to check its row count."""
    expected, actual, written = {}, {}, 0
    parts = dict(tuple(frame.groupby(buckets.to_numpy(), sort=False))) if len(frame) else {}
    for key in context.partition_keys:
        bucket = bucket_of(key)
        part = parts.get(bucket, frame.iloc[0:0])
        path = output.path(directory, f"{bucket}.csv")
        written += write_csv_atomic(part, path)
        expected[str(path)] = len(part)
        actual[str(path)] = count_csv_rows(path)
    context.log.info(f"wrote {len(expected)} file(s), {len(frame)} rows, to {output.path(directory)}")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(output.path(directory))),
            "files": len(expected),
            "rows": len(frame),
            "bytes_written": written,
            "preview": preview(frame),
        },
        check_results=[check_csv_row_counts(asset_name, expected, actual)],
    )


@csv_export_asset("cleaned_events", "event_table_csv", EVENT_TABLE_CSV)
def event_table_csv(context: AssetExecutionContext, cleaned_events: pd.DataFrame,
                    output: OutputLocation) -> MaterializeResult:
    """The event table, one CSV file per hour: ``<output_dir>/event_table/<YYYYMMDDHH>.csv``.

    Columns, in order: user_id, time_stamp (ISO 8601 UTC, ``2017-02-02T20:22:00Z``), url_level1,
    url_level2, url_level3, activity, event_id. Rows sorted by time_stamp then event_id; NULL is
    an empty field. Source: ``cleaned_events``.
    """
    table = event_table(cleaned_events, with_bucket=True)
    buckets = table.pop("time_bucket")
    return export_per_partition(context, "event_table_csv", table, buckets, output, "event_table")


@csv_export_asset("hourly_activity", "hourly_activity_csv", HOURLY_ACTIVITY_CSV)
def hourly_activity_csv(context: AssetExecutionContext, hourly_activity: pd.DataFrame,
                        output: OutputLocation) -> MaterializeResult:
    """The hourly aggregate, one CSV file per hour: ``<output_dir>/hourly_activity/<YYYYMMDDHH>.csv``.

    Columns, in order: time_bucket, url_level1, url_level2, activity, activity_count,
    user_count; sorted by the grain columns. Source: ``hourly_activity``.
    """
    return export_per_partition(context, "hourly_activity_csv", hourly_activity, hourly_activity["time_bucket"],
                   output, "hourly_activity")
