"""Exports: the analysts' CSV files, one per hourly partition.

``event_table_csv``     -> ``<output_dir>/event_table/<YYYYMMDDHH>.csv``
``hourly_activity_csv`` -> ``<output_dir>/hourly_activity/<YYYYMMDDHH>.csv``

Every partition of the run gets its file, header-only when the hour has no rows, so a file's
presence means "this hour was processed".
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    asset,
)

from hipages_pipeline.assets.common import GROUP, OWNERS, PREVIEW_ROWS, preview
from hipages_pipeline.checks import check_csv_row_counts, csv_check_spec
from hipages_pipeline.events.csv_files import copy_to_csv_atomic, count_csv_rows
from hipages_pipeline.io_manager import DuckDBQuery
from hipages_pipeline.partitions import (
    PARTITION_KEY_FORMAT,
    hourly_partitions,
    single_run_backfill,
)
from hipages_pipeline.resources import DuckDBWarehouse, OutputLocation
from hipages_pipeline.schemas import EVENT_TABLE_CSV, HOURLY_ACTIVITY_CSV


def bucket_of(partition_key: str) -> str:
    """``2017-02-02-20:00`` -> ``2017020220`` (the hour's file name and time_bucket)."""
    return datetime.strptime(partition_key, PARTITION_KEY_FORMAT).strftime("%Y%m%d%H")


@dataclass(frozen=True)
class CsvLayout:
    """How a table becomes one CSV file per hour.

    directory: sub-directory of the output directory; files are ``<YYYYMMDDHH>.csv``.
    columns: the CSV columns, in order, as SQL expressions over the table's row ``t`` (name -> SQL).
    hour: SQL expression (over ``t``) of the UTC time that places a row in an hour.
    order_by: SQL ``ORDER BY`` list (over ``t``) of the rows within a file.
    """

    directory: str
    columns: dict[str, str]
    hour: str
    order_by: str

    def hour_sql(self, rows_sql: str, start: datetime) -> str:
        """The SELECT of one hour's file: the rows of ``rows_sql`` in [start, start + 1 h)."""
        end = start + timedelta(hours=1)
        select = ", ".join(f"{sql} AS {name}" for name, sql in self.columns.items())
        return (f"SELECT {select} FROM ({rows_sql}) t WHERE {self.hour} >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' "
                f"AND {self.hour} < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}' ORDER BY {self.order_by}")

    def file(self, output: OutputLocation, partition_key: str) -> Path:
        return output.path(self.directory, f"{bucket_of(partition_key)}.csv")


def _iso(column: str) -> str:
    return f"strftime({column}, '%Y-%m-%dT%H:%M:%SZ')"


EVENT_TABLE_LAYOUT = CsvLayout(
    directory="event_table",
    columns={"user_id": "t.user_id", "time_stamp": _iso("t.time_stamp"), "url_level1": "t.url_level1",
             "url_level2": "t.url_level2", "url_level3": "t.url_level3", "activity": "t.activity",
             "event_id": "t.event_id"},
    hour="t.time_stamp", order_by="t.time_stamp, t.event_id",
)
HOURLY_ACTIVITY_LAYOUT = CsvLayout(
    directory="hourly_activity",
    columns={c.name: f"t.{c.name}" for c in HOURLY_ACTIVITY_CSV.columns},
    hour="strptime(t.time_bucket, '%Y%m%d%H')",
    order_by="t.time_bucket, t.url_level1 NULLS FIRST, t.url_level2 NULLS FIRST, t.activity NULLS FIRST, "
             "t.activity_count, t.user_count",
)


def export_per_partition(context: AssetExecutionContext, asset_name: str, rows_sql: str, layout: CsvLayout,
                         output: OutputLocation, warehouse: DuckDBWarehouse) -> MaterializeResult:
    """Write one CSV file per partition of the run with DuckDB's ``COPY`` (the rows never leave
    DuckDB), then read each back with a CSV parser to check its row count."""
    expected, actual, written = {}, {}, 0
    with warehouse.connect() as con:
        for key in context.partition_keys:
            path = layout.file(output, key)
            start = datetime.strptime(key, PARTITION_KEY_FORMAT)
            rows, size = copy_to_csv_atomic(con, layout.hour_sql(rows_sql, start), path)
            written += size
            expected[str(path)] = rows
            actual[str(path)] = count_csv_rows(con, path, list(layout.columns))
        sample = con.sql(f"SELECT * FROM ({rows_sql}) LIMIT {PREVIEW_ROWS}").df()
    rows = sum(expected.values())
    context.log.info(f"wrote {len(expected)} file(s), {rows} rows, to {output.path(layout.directory)}")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(output.path(layout.directory))),
            "files": len(expected),
            "rows": rows,
            "bytes_written": written,
            "preview": preview(sample),
        },
        check_results=[check_csv_row_counts(asset_name, expected, actual)],
    )


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


@csv_export_asset("cleaned_events", "event_table_csv", EVENT_TABLE_CSV)
def event_table_csv(context: AssetExecutionContext, cleaned_events: DuckDBQuery, output: OutputLocation,
                    warehouse: DuckDBWarehouse) -> MaterializeResult:
    """The event table, one CSV file per hour: ``<output_dir>/event_table/<YYYYMMDDHH>.csv``.

    Columns, in order: user_id, time_stamp (ISO 8601 UTC, ``2017-02-02T20:22:00Z``), url_level1,
    url_level2, url_level3, activity, event_id. Rows sorted by time_stamp then event_id; NULL is
    an empty field. Source: ``cleaned_events``.
    """
    return export_per_partition(context, "event_table_csv", cleaned_events.sql, EVENT_TABLE_LAYOUT, output, warehouse)


@csv_export_asset("hourly_activity", "hourly_activity_csv", HOURLY_ACTIVITY_CSV)
def hourly_activity_csv(context: AssetExecutionContext, hourly_activity: DuckDBQuery, output: OutputLocation,
                        warehouse: DuckDBWarehouse) -> MaterializeResult:
    """The hourly aggregate, one CSV file per hour: ``<output_dir>/hourly_activity/<YYYYMMDDHH>.csv``.

    Columns, in order: time_bucket, url_level1, url_level2, activity, activity_count,
    user_count; sorted by the grain columns. Source: ``hourly_activity``.
    """
    return export_per_partition(context, "hourly_activity_csv", hourly_activity.sql, HOURLY_ACTIVITY_LAYOUT,
                                output, warehouse)
