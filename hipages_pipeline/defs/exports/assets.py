"""Exports, hourly: the analysts' CSV files, one per partition, written by DuckDB's ``COPY``.

``event_table_csv``      <- ``cleaned_events``:  ``<output_dir>/event_table/<YYYYMMDDHH>.csv``
``hourly_activity_csv``  <- ``hourly_activity``: ``<output_dir>/hourly_activity/<YYYYMMDDHH>.csv``
``user_sessions_csv``    <- ``user_sessions``:   ``<output_dir>/user_sessions/<YYYYMMDDHH>.csv``

Columns, formats and row order are the contract's CSV layouts (:mod:`hipages_pipeline.lib.contract`).
Every partition of the run gets its file, header-only when the hour has no rows, so a file's
presence means "this hour was processed".
"""

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    asset,
)

from hipages_pipeline.defs.check_helpers import per_hour_check
from hipages_pipeline.defs.common import (
    GROUP,
    OWNERS,
    PREVIEW_ROWS,
    csv_column_schema,
    preview,
)
from hipages_pipeline.defs.exports.checks import check_csv_row_counts, csv_check_spec
from hipages_pipeline.defs.io_manager import DuckDBQuery
from hipages_pipeline.defs.partitions import (
    hour_of,
    hourly_partitions,
    single_run_backfill,
)
from hipages_pipeline.defs.resources import DuckDBWarehouse, OutputLocation
from hipages_pipeline.lib.contract import (
    CLEANED_EVENTS,
    HOURLY_ACTIVITY,
    TIME_BUCKET_FORMAT,
    USER_SESSIONS,
    Table,
)
from hipages_pipeline.lib.storage.csv_files import copy_to_csv_atomic, count_csv_rows


def hour_file(output: OutputLocation, table: Table, partition_key: str) -> Path:
    """``<output_dir>/<layout directory>/<YYYYMMDDHH>.csv`` of one partition."""
    return output.path(table.csv.directory, f"{hour_of(partition_key):{TIME_BUCKET_FORMAT}}.csv")


def export_per_partition(context: AssetExecutionContext, asset_name: str, rows_sql: str, table: Table,
                         output: OutputLocation, warehouse: DuckDBWarehouse) -> Iterator:
    """Write one CSV file per partition of the run with DuckDB's ``COPY`` (the rows never leave
    DuckDB), then read each back with a CSV parser: each hour's ``csv_row_count_matches_table``."""
    paths, expected, actual, written = {}, {}, {}, 0
    with warehouse.connect() as con:
        for key in context.partition_keys:
            paths[key] = path = hour_file(output, table, key)
            start = hour_of(key)
            rows, size = copy_to_csv_atomic(con, table.csv_select_sql(rows_sql, start, start + timedelta(hours=1)), path)
            written += size
            expected[str(path)] = rows
            actual[str(path)] = count_csv_rows(con, path, list(table.csv.columns))
        sample = con.sql(f"SELECT * FROM ({rows_sql}) LIMIT {PREVIEW_ROWS}").df()
    rows = sum(expected.values())
    context.log.info(f"wrote {len(expected)} file(s), {rows} rows, to {output.path(table.csv.directory)}")
    yield MaterializeResult(metadata={
        "path": MetadataValue.path(str(output.path(table.csv.directory))),
        "files": len(expected),
        "rows": rows,
        "bytes_written": written,
        "preview": preview(sample),
    })
    yield from per_hour_check(context, {
        key: check_csv_row_counts(asset_name, {str(path): expected[str(path)]}, {str(path): actual[str(path)]})
        for key, path in paths.items()})


def csv_export_asset(table: Table) -> Callable:
    """The ``@asset`` decorator of a table's hourly CSV export (``<layout directory>_csv``): fed by
    the table, with the layout's column schema and the ``csv_row_count_matches_table`` check."""
    name = f"{table.csv.directory}_csv"
    return asset(
        name=name, ins={table.name: AssetIn(table.name)},
        partitions_def=hourly_partitions, backfill_policy=single_run_backfill,
        group_name=GROUP, owners=OWNERS, kinds={"csv"},
        metadata={"dagster/column_schema": csv_column_schema(table)},
        check_specs=[csv_check_spec(name)],
    )


@csv_export_asset(CLEANED_EVENTS)
def event_table_csv(context: AssetExecutionContext, cleaned_events: DuckDBQuery, output: OutputLocation,
                    warehouse: DuckDBWarehouse) -> Iterator:
    """The event table, one CSV file per hour: ``<output_dir>/event_table/<YYYYMMDDHH>.csv``.

    Columns, in order: user_id, time_stamp (ISO 8601 UTC, ``2017-02-02T20:22:00Z``), url_level1,
    url_level2, url_level3, activity, event_id. Rows sorted by time_stamp then event_id; NULL is
    an empty field. Source: ``cleaned_events``.
    """
    yield from export_per_partition(context, "event_table_csv", cleaned_events.sql, CLEANED_EVENTS, output, warehouse)


@csv_export_asset(HOURLY_ACTIVITY)
def hourly_activity_csv(context: AssetExecutionContext, hourly_activity: DuckDBQuery, output: OutputLocation,
                        warehouse: DuckDBWarehouse) -> Iterator:
    """The hourly aggregate, one CSV file per hour: ``<output_dir>/hourly_activity/<YYYYMMDDHH>.csv``.

    Columns, in order: time_bucket, url_level1, url_level2, activity, activity_count,
    user_count; sorted by the grain columns (NULL first). Source: ``hourly_activity``.
    """
    yield from export_per_partition(context, "hourly_activity_csv", hourly_activity.sql, HOURLY_ACTIVITY, output,
                                warehouse)


@csv_export_asset(USER_SESSIONS)
def user_sessions_csv(context: AssetExecutionContext, user_sessions: DuckDBQuery, output: OutputLocation,
                      warehouse: DuckDBWarehouse) -> Iterator:
    """The sessions, one CSV file per hour of session start: ``<output_dir>/user_sessions/<YYYYMMDDHH>.csv``.

    Columns, in order: those of ``user_sessions``; session_start and session_end as ISO 8601 UTC,
    is_bounce and converted as ``true``/``false``, NULL as an empty field. Rows sorted by
    session_start, user_id, url_level1, session_id. Source: ``user_sessions``.
    """
    yield from export_per_partition(context, "user_sessions_csv", user_sessions.sql, USER_SESSIONS, output, warehouse)
