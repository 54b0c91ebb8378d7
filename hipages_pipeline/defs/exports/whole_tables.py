"""Exports, whole tables: one CSV file per table over every stored hour, as unpartitioned assets.

``whole_event_table_csv``      ``<output_dir>/event_table.csv``      after ``event_table_csv``
``whole_hourly_activity_csv``  ``<output_dir>/hourly_activity.csv``  after ``hourly_activity_csv``
``whole_user_sessions_csv``    ``<output_dir>/user_sessions.csv``    after ``user_sessions_csv``
``whole_rejected_events_csv``  ``<output_dir>/rejected_events.csv``  after the two quarantine tables

The first three concatenate the per-hour files of every hour that the stored table holds, in hour
order (each file is sorted, so the whole file is the table sorted, without sorting it again). The
quarantine file is written from the database: the rows of ``rejected_events`` then those of
``rejected_without_hour``, each by source_file and line_number, times as ISO 8601 UTC. Each file
has a check that reads it back and compares its rows with the table's.
"""

from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from hipages_pipeline.defs.common import GROUP, OWNERS, csv_column_schema
from hipages_pipeline.defs.exports.checks import check_whole_file, whole_file_check_spec
from hipages_pipeline.defs.resources import (
    DuckDBWarehouse,
    OutputLocation,
)
from hipages_pipeline.defs.warehouse import stored_table
from hipages_pipeline.lib.contract import (
    CLEANED_EVENTS,
    DUPLICATE_EVENTS,
    HOURLY_ACTIVITY,
    ISO_TIME_FORMAT,
    REJECTED_EVENTS,
    REJECTED_FILE,
    REJECTED_WITHOUT_HOUR,
    TIME_BUCKET_FORMAT,
    USER_SESSIONS,
    Table,
)
from hipages_pipeline.lib.storage.csv_files import (
    concatenate_csv_files,
    count_csv_rows,
    write_csv_atomic,
)


def _hours_and_rows(con, table: Table) -> tuple[list, int]:
    name = stored_table(con, table)
    hours = [hour for (hour,) in con.execute(
        f"SELECT DISTINCT date_trunc('hour', {table.partition_expr}) FROM {name} ORDER BY 1").fetchall()]
    return hours, int(con.execute(f"SELECT count(*) FROM {name}").fetchone()[0])


def write_whole_file(context: AssetExecutionContext, table: Table, output: OutputLocation,
                     warehouse: DuckDBWarehouse, **extra: object) -> MaterializeResult:
    """Concatenate the hour files of every hour the table holds into ``<output_dir>/<directory>.csv``
    and check the file's rows (parsed back) against the table's."""
    path = output.path(table.csv.whole_file)
    with warehouse.connect() as con:
        hours, rows = _hours_and_rows(con, table)
        parts = [output.path(table.csv.directory, f"{hour:{TIME_BUCKET_FORMAT}}.csv") for hour in hours]
        missing = [str(part) for part in parts if not part.exists()]
        size = concatenate_csv_files(parts, path, list(table.csv.columns))
        written = count_csv_rows(con, path, list(table.csv.columns))
    context.log.info(f"{path}: {written} rows of {len(hours)} hour(s)")
    return MaterializeResult(
        metadata={"path": MetadataValue.path(str(path)), "rows": written, "hours": len(hours),
                  "bytes_written": size, **extra},
        check_results=[check_whole_file(context.asset_key.to_user_string(), path, written, rows, missing)],
    )


def _whole_asset(table: Table, upstream: str):
    return asset(
        name=f"whole_{table.csv.directory}_csv", deps=[AssetKey(upstream)], group_name=GROUP, owners=OWNERS,
        kinds={"csv"}, metadata={"dagster/column_schema": csv_column_schema(table)},
        check_specs=[whole_file_check_spec(f"whole_{table.csv.directory}_csv")],
        description=f"The whole {table.csv.directory} table as one CSV file, `<output_dir>/{table.csv.whole_file}`: "
        f"the per-hour files of every hour that `{table.name}` holds, in hour order (the same columns).",
    )


@_whole_asset(CLEANED_EVENTS, "event_table_csv")
def whole_event_table_csv(context: AssetExecutionContext, output: OutputLocation,
                          warehouse: DuckDBWarehouse) -> MaterializeResult:
    with warehouse.connect() as con:
        duplicates = con.execute(f"SELECT count(*) FROM {stored_table(con, DUPLICATE_EVENTS)}").fetchone()[0]
    return write_whole_file(context, CLEANED_EVENTS, output, warehouse, duplicates_dropped=int(duplicates))


@_whole_asset(HOURLY_ACTIVITY, "hourly_activity_csv")
def whole_hourly_activity_csv(context: AssetExecutionContext, output: OutputLocation,
                              warehouse: DuckDBWarehouse) -> MaterializeResult:
    return write_whole_file(context, HOURLY_ACTIVITY, output, warehouse)


@_whole_asset(USER_SESSIONS, "user_sessions_csv")
def whole_user_sessions_csv(context: AssetExecutionContext, output: OutputLocation,
                            warehouse: DuckDBWarehouse) -> MaterializeResult:
    return write_whole_file(context, USER_SESSIONS, output, warehouse)


@asset(
    deps=[AssetKey(REJECTED_EVENTS.name), AssetKey(REJECTED_WITHOUT_HOUR.name)], group_name=GROUP, owners=OWNERS,
    kinds={"csv"}, check_specs=[whole_file_check_spec("whole_rejected_events_csv")],
)
def whole_rejected_events_csv(context: AssetExecutionContext, output: OutputLocation,
                              warehouse: DuckDBWarehouse) -> MaterializeResult:
    """The whole quarantine as one CSV file, ``<output_dir>/rejected_events.csv``: the rows of
    ``rejected_events`` (lines with an hour) then those of ``rejected_without_hour``, each by
    source_file and line_number; the columns of ``rejected_events``, times as ISO 8601 UTC."""
    path = output.path(REJECTED_FILE)
    with warehouse.connect() as con:
        with_hour, without_hour = stored_table(con, REJECTED_EVENTS), stored_table(con, REJECTED_WITHOUT_HOUR)
        rejected = con.sql(
            f"SELECT * EXCLUDE (part) FROM (SELECT 0 AS part, * FROM {with_hour} "
            f"UNION ALL SELECT 1 AS part, * FROM {without_hour}) ORDER BY part, source_file, line_number").df()
        for column in ("time_stamp", "rejected_at"):
            rejected[column] = pd.to_datetime(rejected[column]).dt.strftime(ISO_TIME_FORMAT)
        size = write_csv_atomic(rejected, Path(path))
        written = count_csv_rows(con, path, REJECTED_EVENTS.column_names)
    return MaterializeResult(
        metadata={"path": MetadataValue.path(str(path)), "rows": written, "bytes_written": size},
        check_results=[check_whole_file("whole_rejected_events_csv", path, written, len(rejected), [])],
    )
