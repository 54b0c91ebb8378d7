"""What the stages' assets share: group, owners, the contract's tables as Dagster metadata, and
small helpers for previews and errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pandas as pd
from dagster import (
    Failure,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    asset,
)

from hipages_pipeline.defs.partitions import hourly_partitions, single_run_backfill
from hipages_pipeline.lib.contract import Column, Table
from hipages_pipeline.lib.events.reader import SourceReadError

GROUP = "hipages_events"
OWNERS = ["team:data-platform"]
PREVIEW_ROWS = 10


def _schema(columns: list[Column]) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(c.name, c.type, c.description, constraints=TableColumnConstraints(nullable=c.nullable))
        for c in columns])


def column_schema(table: Table) -> TableSchema:
    """The stored table's ``dagster/column_schema`` (DuckDB types), from the contract."""
    return _schema(list(table.columns))


def csv_column_schema(table: Table) -> TableSchema:
    """The ``dagster/column_schema`` of the table's CSV files (string, integer, boolean), from the contract."""
    return _schema(table.csv_columns())


def table_metadata(table: Table) -> dict[str, object]:
    """Definition metadata of a stored table's asset: column schema and the IO manager's ``partition_expr``."""
    metadata: dict[str, object] = {"dagster/column_schema": column_schema(table)}
    if table.partition_expr or table.by_source_file:
        metadata["partition_expr"] = "source_file" if table.by_source_file else table.partition_expr
    return metadata


def utc_now() -> datetime:
    """Now, as a naive UTC datetime (how the tables store time)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> MetadataValue:
    """The first rows of a frame as a markdown table for the UI."""
    return MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "(no rows)")


@contextmanager
def source_errors_as_failure() -> Iterator[None]:
    """Turn an unreadable source file into a ``dagster.Failure`` with a clear description."""
    try:
        yield
    except SourceReadError as exc:
        raise Failure(description=str(exc)) from exc


def describe(table: Table, details: str | None = None) -> str:
    """A stored table's asset description from the contract: what a row is, its grain and columns."""
    columns = "\n".join(f"- `{c.name}` {c.type}{'' if c.nullable else ', never NULL'}: {c.description}"
                        for c in table.columns)
    text = (f"{table.description}\n\nGrain: one row per ({', '.join(table.grain)}). "
            f"Partitioning: {table.partitioning}.\n\n{columns}")
    return f"{text}\n\n{details.strip()}" if details else text


def hourly_table_asset(table: Table, notes: str, check_specs: list, ins: dict) -> Callable:
    """The ``@asset`` decorator of an hourly DuckDB table computed in SQL: the contract's
    description, column schema and partition expression, the hourly partitions (a range of hours
    is one run), and its checks."""
    return asset(ins=ins, partitions_def=hourly_partitions, backfill_policy=single_run_backfill,
                 group_name=GROUP, owners=OWNERS, kinds={"duckdb"}, description=describe(table, notes),
                 metadata=table_metadata(table), check_specs=check_specs)
