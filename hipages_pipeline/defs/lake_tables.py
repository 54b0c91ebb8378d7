"""The Delta tables of the ``delta`` storage: which tables, created once, read through views,
written one slice per commit.

Tables: every table of the contract (:data:`hipages_pipeline.lib.contract.TABLES`), plus the
bookkeeping ``_materialized`` (which hours were materialized) and ``_settings`` (the source time
zone). They are created empty, all at once, before a run writes (:func:`ensure_lake_tables`, by
the warehouse's setup and the CLI): concurrent first commits of a new table would race.

A slice's predicate (:func:`slice_predicate`) is the IO manager's partition: a time window on the
table's partition column (naive UTC, ``[start, end)``), or a list of source files.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime

import duckdb
from dagster import TimeWindow
from dagster._core.storage.db_io_manager import TableSlice

from hipages_pipeline.defs.materialized_hours import BOOK_COLUMNS, naive_utc
from hipages_pipeline.lib.contract import TABLES
from hipages_pipeline.lib.storage.lake import LAKE_SCHEMA, Lake, arrow_schema, sql_literal

SETTINGS_COLUMNS = [("key", "VARCHAR"), ("value", "VARCHAR")]
"""``_settings``: the output's settings (``source_timezone``)."""


def lake_columns() -> dict[str, list[tuple[str, str]]]:
    """Each Delta table's columns, ``(name, DuckDB type)``."""
    tables = {table.name: [(c.name, c.type) for c in table.columns] for table in TABLES.values()}
    return {**tables, "_materialized": BOOK_COLUMNS, "_settings": SETTINGS_COLUMNS}


_COMPLETE_LAKES: set[str] = set()
"""Lakes whose tables this process has seen all created (tables are never dropped)."""


def ensure_lake_tables(lake: Lake) -> list[str]:
    """Create the missing tables, empty; the names of those created."""
    if lake.uri in _COMPLETE_LAKES:
        return []
    created = [name for name, columns in lake_columns().items()
               if lake.table(name) is None and lake.create(name, arrow_schema(columns))]
    _COMPLETE_LAKES.add(lake.uri)
    return created


_ATTACHED: dict[str, list[duckdb.DuckDBPyConnection]] = {}
"""The open connections of this process that read each lake (by URI): a write refreshes them."""
_ATTACHED_LOCK = threading.Lock()


def attach_lake(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Make the lake's tables readable on ``con`` as ``analytics.<name>`` (their latest versions),
    replacing any local table of that name in the connection's scratch database. Until
    :func:`detach_lake`, every write of this process through :func:`replace_slice` refreshes the
    table on ``con`` too (a step that reads what its output just stored sees the new rows)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE_SCHEMA}")
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [LAKE_SCHEMA]).fetchall():
        if name in lake_columns():
            con.execute(f'DROP TABLE {LAKE_SCHEMA}."{name}"')
    lake.attach(con, lake_columns())
    with _ATTACHED_LOCK:
        attached = _ATTACHED.setdefault(lake.uri, [])
        if not any(other is con for other in attached):
            attached.append(con)


def detach_lake(con: duckdb.DuckDBPyConnection) -> None:
    """Stop refreshing ``con`` (before it is closed)."""
    with _ATTACHED_LOCK:
        for attached in _ATTACHED.values():
            attached[:] = [other for other in attached if other is not con]


def replace_slice(lake: Lake, name: str, batches, predicate: str | None) -> int:
    """:meth:`Lake.replace`, then the table's new version on every attached connection; the rows written."""
    rows = lake.replace(name, batches, predicate)
    with _ATTACHED_LOCK:
        connections = list(_ATTACHED.get(lake.uri, []))
    for con in connections:
        lake.attach(con, [name])
    return rows


def _time_predicate(table: str, window: TimeWindow) -> str:
    """``start <= partition time < end`` in the Delta predicate language (DataFusion SQL)."""
    start, end = (naive_utc(moment) for moment in window)
    if table == "_materialized":
        column, fmt = "hour", None
    else:
        contract = TABLES[table]
        column = contract.partition_column
        found = re.fullmatch(r"strptime\(\{\}, '([^']+)'\)", contract.partition_time)
        fmt = found.group(1) if found else None
        if fmt is None and contract.partition_time != "{}":
            raise ValueError(f"{table}: no Delta predicate for the partition time {contract.partition_time!r}")
    if fmt is not None:  # a text column holding the time in ``fmt``: its order is the time's
        return f'"{column}" >= {sql_literal(f"{start:{fmt}}")} AND "{column}" < {sql_literal(f"{end:{fmt}}")}'
    return f'"{column}" >= {sql_literal(start)} AND "{column}" < {sql_literal(end)}'


def slice_predicate(table_slice: TableSlice) -> str | None:
    """The Delta predicate of the rows a slice replaces; None for an unpartitioned table (all rows).

    Raises:
        ValueError: more than one partition dimension (none of this project's tables has two).
    """
    dimensions = table_slice.partition_dimensions or []
    if not dimensions:
        return None
    if len(dimensions) > 1:
        raise ValueError(f"{table_slice.table}: one partition dimension expected, got {len(dimensions)}")
    dimension = dimensions[0]
    if isinstance(dimension.partitions, TimeWindow):
        return _time_predicate(table_slice.table, dimension.partitions)
    keys: Sequence[str] = dimension.partitions
    return f'"{dimension.partition_expr}" IN ({", ".join(sql_literal(key) for key in keys)})'


def book_predicate(table: str, window: tuple[datetime, datetime]) -> str:
    """The ``_materialized`` rows of ``table`` in ``[start, end)``."""
    return f'"table_name" = {sql_literal(table)} AND ' + _time_predicate("_materialized", TimeWindow(*window))
