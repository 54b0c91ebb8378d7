"""The DuckDB IO manager: DuckDB queries and pandas DataFrames <-> DuckDB tables, one partition slice at a time.

The heavy tables never leave DuckDB: an asset returns a :class:`DuckDBQuery` (a SELECT, plus any
Arrow data it reads) and the IO manager runs it as ``INSERT INTO <table> BY NAME <query>``; an
input annotated ``DuckDBQuery`` is the SELECT of the upstream partition slice, which the asset
composes into its own query (no rows are moved into Python). pandas frames (small tables, tests)
are stored the same way.

It is dagster-duckdb's ``DuckDBIOManager`` with two defects of the stock pandas handler fixed
(dagster-io/dagster#13098, #17058; duckdb#13339):

1. **Atomic replace.** The stock manager deletes a partition's rows and inserts the new ones in
   two auto-committed statements, so a failed insert leaves the partition empty. Here the
   connection runs one transaction per output: delete + insert commit together or not at all.
2. **Columns by name.** The stock handler inserts ``SELECT *`` by position, so a frame whose
   columns moved scatters values across columns. Here the table is created from the asset's
   declared ``dagster/column_schema`` (DuckDB types), the frame must have exactly those columns
   (else a clear error and a rollback), and rows are inserted ``BY NAME``.

An empty frame still creates the (empty) table, so downstream assets can always read a slice.

Which hours were materialized is recorded in the database (:mod:`hipages_pipeline.defs.materialized_hours`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import pandas as pd
from dagster import (
    InputContext,
    MetadataValue,
    OutputContext,
    TableSchema,
)
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DuckDbClient, _get_cleanup_statement

from hipages_pipeline.defs.automation.stale_runs import record_run_worker
from hipages_pipeline.defs.materialized_hours import record_materialized, require_materialized
from hipages_pipeline.lib.storage.duckdb_files import open_database, table_exists


@dataclass(frozen=True)
class DuckDBQuery:
    """Rows that stay inside DuckDB: a SELECT statement and the Arrow data it reads.

    As an asset's output, the IO manager runs ``INSERT INTO <table> BY NAME <sql>`` on its
    connection, in the transaction that deletes the partition slice. As an input, ``sql`` is the
    SELECT of the upstream partition slice (``SELECT * FROM analytics.t WHERE ...``), to be used
    as a sub-query.

    Attributes:
        sql: a SELECT statement over the database's tables (and the names in ``arrow``).
        arrow: Arrow tables or record-batch readers the SQL reads, by the names it uses; they are
            registered on the connection that runs the query (a reader is consumed once).
        params: named parameters of ``sql`` (``$name``).
        stored: filled by the IO manager once the output is stored: ``rows`` (rows inserted) and
            ``table`` (the table's name), for the asset's checks after the ``yield``.
    """

    sql: str
    arrow: Mapping[str, object] = field(default_factory=dict)
    params: Mapping[str, object] = field(default_factory=dict)
    stored: dict[str, object] = field(default_factory=dict, compare=False)


class SchemaMismatchError(ValueError):
    """The frame's columns differ from the table's declared schema."""


def _declared_schema(context: OutputContext) -> TableSchema | None:
    schema = (context.definition_metadata or {}).get("dagster/column_schema")
    if schema is None and context.has_asset_key:
        schema = context.asset_spec.metadata.get("dagster/column_schema") if context.asset_spec else None
    if isinstance(schema, MetadataValue):
        schema = schema.value
    return schema if isinstance(schema, TableSchema) else None


def _row_count(context: OutputContext, rows: int) -> dict[str, MetadataValue]:
    """Dagster's row-count metadata of a stored output (per partition when the run has one key)."""
    key = "dagster/partition_row_count" if context.has_partition_key else "dagster/row_count"
    return {key: MetadataValue.int(rows)}


def create_table_sql(table: str, schema: TableSchema) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a declared column schema (column types are DuckDB types)."""
    columns = ", ".join(f'"{c.name}" {c.type}' for c in schema.columns)
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


class PandasByNameTypeHandler(DbTypeHandler[pd.DataFrame]):
    """Writes a DataFrame into its slice of a table created from the declared column schema."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        table = f"{table_slice.schema}.{table_slice.table}"
        schema = _declared_schema(context)
        connection.register("_hipages_frame", obj)
        if schema is not None:
            _ensure_table(connection, table, schema, list(obj.columns))
        else:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _hipages_frame LIMIT 0")
        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _hipages_frame")
        connection.unregister("_hipages_frame")
        record_materialized(context, table_slice, connection)
        return _row_count(context, len(obj))

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pd.DataFrame:
        require_materialized(context, table_slice, connection)
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pd.DataFrame()
        return connection.execute(DuckDbClient.get_select_statement(table_slice)).df()

    @property
    def supported_types(self):
        return [pd.DataFrame]


def _ensure_table(connection, table: str, schema: TableSchema | None, columns: list[str]) -> None:
    """Create ``table`` from its declared schema, after checking that ``columns`` are exactly those."""
    if schema is None:
        return
    check_columns(table, [column.name for column in schema.columns], columns)
    connection.execute(create_table_sql(table, schema))


def check_columns(table: str, declared: list[str], columns: list[str]) -> None:
    """Raise ``SchemaMismatchError`` unless the output's ``columns`` are the ``declared`` ones (any order)."""
    if sorted(declared) != sorted(columns):
        raise SchemaMismatchError(
            f"{table}: the output's columns {sorted(columns)} differ from the declared "
            f"schema {sorted(declared)}; nothing was written (the old rows are kept)"
        )


def stored_metadata(context: OutputContext, connection, table_slice: TableSlice, rows: int) -> dict[str, MetadataValue]:
    """An output's metadata once stored: its row count and a preview of the stored slice."""
    preview = connection.sql(f"SELECT * FROM ({DuckDbClient.get_select_statement(table_slice)}) LIMIT 10").df()
    return {**_row_count(context, rows), "rows": MetadataValue.int(rows),
            "preview": MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "(no rows)")}


def _columns(connection, query: DuckDBQuery) -> list[str]:
    """The query's column names, without running it (a parameterized ``sql()`` relation would be
    executed and its result held in memory; a record-batch reader must not be read here)."""
    if query.params:
        return [column[0] for column in
                connection.execute(f"SELECT * FROM ({query.sql}) LIMIT 0", dict(query.params)).description]
    return connection.sql(query.sql).columns


class DuckDBQueryTypeHandler(DbTypeHandler[DuckDBQuery]):
    """Runs a :class:`DuckDBQuery` into its slice of a table created from the declared column schema."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: DuckDBQuery, connection):
        table = f"{table_slice.schema}.{table_slice.table}"
        for name, data in obj.arrow.items():
            connection.register(name, data)
        try:
            schema = _declared_schema(context)
            if schema is not None:
                _ensure_table(connection, table, schema, _columns(connection, obj))
            else:
                connection.execute(f"CREATE TABLE IF NOT EXISTS {table} AS {obj.sql} LIMIT 0", dict(obj.params))
            rows = connection.execute(f"INSERT INTO {table} BY NAME {obj.sql}", dict(obj.params)).fetchone()[0]
        finally:
            for name in obj.arrow:
                connection.unregister(name)
        record_materialized(context, table_slice, connection)
        obj.stored.update(rows=int(rows), table=table)
        return stored_metadata(context, connection, table_slice, int(rows))

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> DuckDBQuery:
        require_materialized(context, table_slice, connection)
        table = f"{table_slice.schema}.{table_slice.table}"
        upstream = context.upstream_output
        schema = _declared_schema(upstream) if upstream is not None else None
        if schema is not None:  # an input that reads around its window may find no table yet
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {table_slice.schema}")
            connection.execute(create_table_sql(table, schema))
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return DuckDBQuery(f"SELECT * FROM {table} WHERE false")
        return DuckDBQuery(DuckDbClient.get_select_statement(table_slice))

    @property
    def supported_types(self):
        return [DuckDBQuery]


class TransactionalDuckDbClient(DuckDbClient):
    """A DuckDB client whose connection wraps everything done through it in one transaction."""

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # The stock client runs the DELETE and ignores "no such table"; inside a transaction an
        # error aborts the transaction, so look the table up first.
        if table_exists(connection, table_slice.schema, table_slice.table):
            connection.execute(_get_cleanup_statement(table_slice))

    @staticmethod
    @contextmanager
    def connect(context, table_slice) -> Iterator[duckdb.DuckDBPyConnection]:
        # Like the stock client, waits while another process (a run, a reader) holds the file's
        # lock, but with a bound (HIPAGES_DUCKDB_LOCK_WAIT_SECONDS, default 600 s; then a one-line
        # DatabaseLockedError), only the lock is waited for (a permission error fails at once),
        # the connection is closed on failure too, and all work through it is one transaction.
        conn = open_database(context.resource_config["database"], context.resource_config["connection_config"],
                             wait_seconds=context.resource_config.get("lock_wait_seconds"))
        try:
            conn.begin()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            conn.close()


class HipagesDuckDBIOManager(DuckDBIOManager):
    """DuckDB IO manager for DuckDB queries and pandas frames, with atomic partition replaces and
    by-name inserts.

    Config: ``database`` (path of the DuckDB file, created with its directory when missing),
    ``schema`` (default schema of the tables), ``connection_config`` (DuckDB settings such as
    ``memory_limit`` and ``threads``), ``lock_wait_seconds`` (how long opening the file waits for
    another process; None: ``HIPAGES_DUCKDB_LOCK_WAIT_SECONDS``, default 600), ``lake_uri`` (the
    ``delta`` storage, see :mod:`hipages_pipeline.defs.lake_io_manager`). Tables are named after
    the asset key's last part.

    Raises:
        SchemaMismatchError: an output's columns (query or frame) differ from the asset's declared
            column schema.
    """

    lock_wait_seconds: float | None = None
    lake_uri: str | None = None
    """The ``delta`` storage: store the tables in the Delta lake at this URI instead (see
    :mod:`hipages_pipeline.defs.lake_io_manager`); None: in the DuckDB file ``database``."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [DuckDBQueryTypeHandler(), PandasByNameTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pd.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        # The run's process tags the run with its host and pid, so that a run killed with
        # kill -9 can be found and failed (hipages_pipeline.defs.automation.stale_runs).
        run = getattr(context, "run", None)
        record_run_worker(getattr(context, "instance", None), run.run_id if run is not None else None)
        if self.lake_uri:
            from hipages_pipeline.defs.lake_io_manager import lake_db_io_manager

            return lake_db_io_manager(self.database, self.schema_, self.lake_uri, self.default_load_type())
        return DbIOManager(
            db_client=TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="HipagesDuckDBIOManager",
        )
