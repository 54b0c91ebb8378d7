"""Which partitions of which table were materialized, recorded in the database itself.

Runs use different Dagster instances (the
CLI's, ``dagster dev``'s, tests' ephemeral ones), so which partitions exist cannot come from the
instance. In the transaction that replaces a partitioned slice, the IO manager replaces that
table's rows of the window in ``<schema>._materialized`` (``table_name``, ``hour``: start of the
partition, naive UTC, ``rows``, ``materialized_at``): one row per partition, also when it stored no rows.
Loading a partitioned input then requires every upstream partition of the downstream's own
window to be recorded, and raises ``dagster.Failure`` naming the upstream asset and the missing
partition keys otherwise: "empty" only ever means "materialized and empty". An input that reads
around its window (``user_sessions``' 24-hour look-back and look-ahead, a partition mapping with
offsets) requires none: an hour with no data is never materialized by the landing sensor, and
the sessions refresh spans such hours. Unpartitioned outputs are not recorded. A database
written before this bookkeeping existed has no records: the first read of a table adopts the hours that hold its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    Failure,
    IdentityPartitionMapping,
    InputContext,
    MetadataValue,
    OutputContext,
    TimeWindow,
    TimeWindowPartitionMapping,
)
from dagster._core.storage.db_io_manager import TableSlice
from dagster_duckdb.io_manager import DuckDbClient

from hipages_pipeline.lib.storage.duckdb_files import table_exists

MATERIALIZED_TABLE = "_materialized"
"""The bookkeeping table (in the IO manager's schema): one row per materialized partition."""


BOOK_COLUMNS = [("table_name", "VARCHAR"), ("hour", "TIMESTAMP"), ("rows", "BIGINT"), ("materialized_at", "TIMESTAMP")]
"""The bookkeeping table's columns and DuckDB types (also the ``delta`` storage's Delta table)."""


def _materialized_table(table_slice: TableSlice) -> str:
    return f"{table_slice.schema}.{MATERIALIZED_TABLE}"


def _create_book(connection, table_slice: TableSlice) -> str:
    """The bookkeeping table's name, after creating it when missing."""
    book = _materialized_table(table_slice)
    connection.execute(f"CREATE TABLE IF NOT EXISTS {book} ({', '.join(f'{n} {t}' for n, t in BOOK_COLUMNS)})")
    return book


def naive_utc(moment: datetime) -> datetime:
    """``moment`` in UTC without its zone (how the tables store time); a naive one as it is."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _partition_starts(partitions_def, keys: Sequence[str]) -> dict[str, datetime]:
    """Each time partition key's start, naive UTC (how the tables store time)."""
    return {key: naive_utc(partitions_def.time_window_for_partition_key(key).start) for key in keys}


def _time_dimension(table_slice: TableSlice):
    """The slice's one time-window partition dimension, or None (unpartitioned, or other partitions)."""
    if len(table_slice.partition_dimensions) != 1:
        return None
    dimension = table_slice.partition_dimensions[0]
    return dimension if isinstance(dimension.partitions, TimeWindow) else None


def materialized_rows(context: OutputContext, table_slice: TableSlice) -> tuple[str, dict, tuple[datetime, datetime]] | None:
    """The SELECT (and its parameters) of the output's book rows, one per partition with its rows
    counted in the stored slice, and the window ``[start, end)`` they replace; None for an output
    that is not recorded (unpartitioned, or not by time)."""
    dimension = _time_dimension(table_slice)
    if dimension is None or not context.has_asset_partitions:
        return None
    starts = sorted(_partition_starts(context.asset_partitions_def, context.asset_partition_keys).values())
    if not starts:
        return None
    window_start, window_end = (naive_utc(moment) for moment in dimension.partitions)
    # Each partition's rows: those whose partition_expr is in [its start, the next start).
    ends = [*starts[1:], window_end]
    sql = f"""SELECT $table AS table_name, p.hour, count(t.placed) AS rows, $at AS materialized_at
            FROM (SELECT unnest($starts::TIMESTAMP[]) AS hour, unnest($ends::TIMESTAMP[]) AS next) p
            LEFT JOIN (SELECT {dimension.partition_expr} AS placed
                       FROM ({DuckDbClient.get_select_statement(table_slice)})) t
              ON t.placed >= p.hour AND t.placed < p.next
            GROUP BY p.hour"""
    params = {"table": table_slice.table, "starts": starts, "ends": ends, "at": naive_utc(datetime.now(UTC))}
    return sql, params, (window_start, window_end)


def record_materialized(context: OutputContext, table_slice: TableSlice, connection) -> None:
    """Replace the table's records of the output's partitions by one row per partition (its rows),
    on the output's connection: in the transaction that replaced the slice."""
    rows = materialized_rows(context, table_slice)
    if rows is None:
        return
    sql, params, (window_start, window_end) = rows
    book = _create_book(connection, table_slice)
    connection.execute(f"DELETE FROM {book} WHERE table_name = $table AND hour >= $start AND hour < $end",
                       {"table": table_slice.table, "start": window_start, "end": window_end})
    connection.execute(f"INSERT INTO {book} {sql}", params)


def _reads_its_own_window(context: InputContext) -> bool:
    """Whether the input reads the upstream partitions of the downstream's own window (identity or
    zero-offset mapping), not around it."""
    step = context.step_context
    assets_def = step.job_def.asset_layer.get_assets_def_for_node(step.node_handle)
    if assets_def is None or context.upstream_output is None:
        return False
    mapping = assets_def.get_partition_mapping_for_dep(context.upstream_output.asset_key)
    if mapping is None or isinstance(mapping, IdentityPartitionMapping):
        return True
    return isinstance(mapping, TimeWindowPartitionMapping) and mapping.start_offset == mapping.end_offset == 0


def _adopt_existing_hours(connection, table_slice: TableSlice) -> None:
    """A table stored before this bookkeeping existed has rows but no record: record, once, the
    hours that hold its rows (an hour stored empty back then stays unknown)."""
    table = table_slice.table
    if not table_exists(connection, table_slice.schema, table) or _is_view(connection, table_slice.schema, table):
        return  # no table, or a Delta table (read through a view): its hours were always recorded
    book = _create_book(connection, table_slice)
    if connection.execute(f"SELECT count(*) FROM {book} WHERE table_name = ?", [table]).fetchone()[0]:
        return
    expr = _time_dimension(table_slice).partition_expr
    connection.execute(f"INSERT INTO {book} SELECT $table, date_trunc('hour', {expr}), count(*), $at "
                       f"FROM {table_slice.schema}.{table} GROUP BY 2",
                       {"table": table, "at": naive_utc(datetime.now(UTC))})


def _is_view(connection, schema: str, name: str) -> bool:
    return bool(connection.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                                   [schema, name]).fetchone()[0])


def _describe_keys(keys: list[str], at_most: int = 12) -> str:
    shown = ", ".join(keys[:at_most])
    return shown if len(keys) <= at_most else f"{shown}, ... ({len(keys)} in all)"


def require_materialized(context: InputContext, table_slice: TableSlice, connection) -> None:
    """Raise ``Failure`` unless every upstream partition of the downstream's own window is recorded
    in the bookkeeping table (see the module docstring).

    Raises:
        dagster.Failure: names the upstream asset and the partition keys never materialized.
    """
    if _time_dimension(table_slice) is None or not context.has_asset_partitions:
        return
    keys = list(context.asset_partition_keys)
    if not keys or not _reads_its_own_window(context):
        return
    starts = _partition_starts(context.asset_partitions_def, keys)
    _adopt_existing_hours(connection, table_slice)
    recorded = set()
    if table_exists(connection, table_slice.schema, MATERIALIZED_TABLE):
        recorded = {hour for (hour,) in connection.execute(
            f"SELECT hour FROM {_materialized_table(table_slice)} WHERE table_name = $table "
            "AND hour >= $start AND hour <= $end",
            {"table": table_slice.table, "start": min(starts.values()), "end": max(starts.values())}).fetchall()}
    missing = [key for key in keys if starts[key] not in recorded]
    if missing:
        asset = context.upstream_output.asset_key.to_user_string()
        raise Failure(
            description=f"upstream asset {asset} was never materialized for partition(s) "
            f"{_describe_keys(missing)} ({len(missing)} of the {len(keys)} this step reads); "
            f"materialize {asset} for them first (a run of hipages_etl_job for those hours). Nothing was written.",
            metadata={"upstream_asset": asset, "missing_partitions": MetadataValue.json(missing)},
        )
