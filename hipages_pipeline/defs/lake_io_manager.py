"""The IO manager of the ``delta`` storage: DuckDB computes, Delta Lake stores.

The same assets, the same :class:`~hipages_pipeline.defs.io_manager.DuckDBQuery` outputs and
inputs as on the DuckDB storage (:mod:`hipages_pipeline.defs.io_manager`); only where rows are kept
differs:

- **output**: the query runs in this process's scratch DuckDB, and its rows (cast to the declared
  column types, in the table's column order) stream into **one Delta commit that replaces exactly
  the output's slice** (the run's hours, or its source files; the whole table when
  unpartitioned): delta-rs' overwrite with a predicate. Then the bookkeeping rows of those hours
  go to ``_materialized`` in a second commit (a kill between the two leaves a first write's
  hours unrecorded, so they are rebuilt; a re-write's hours keep their earlier record). Two runs writing disjoint hours both commit. A
  commit that meets a concurrent commit on the same files (the same hour, or hours that share a
  file after compaction) is written again over the new version, up to 5 tries: the last write
  wins, and an hour never holds two writes' rows.
- **input**: the SELECT of the upstream slice over the view ``analytics.<table>`` (the Delta
  table's latest version when the step's connection was opened; an output's query runs over the
  versions current just before its write).

Config: ``database`` (a file in the directory of the process's scratch DuckDB file), ``schema``, ``connection_config`` (DuckDB
settings), ``lake_uri`` (see :mod:`hipages_pipeline.lib.storage.lake`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
from dagster import OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from deltalake.exceptions import CommitFailedError

from hipages_pipeline.defs.io_manager import (
    DuckDBQuery,
    DuckDBQueryTypeHandler,
    _columns,
    _declared_schema,
    check_columns,
    stored_metadata,
)
from hipages_pipeline.defs.lake_tables import (
    attach_lake,
    book_predicate,
    detach_lake,
    lake_columns,
    replace_slice,
    slice_predicate,
)
from hipages_pipeline.defs.materialized_hours import materialized_rows
from hipages_pipeline.lib.storage.duckdb_files import open_database, scratch_database
from hipages_pipeline.lib.storage.lake import Lake

ARROW_BATCH_ROWS = 256 * 1024
"""Rows per Arrow batch from DuckDB to delta-rs (memory per batch: a few tens of MB)."""


def _target_columns(context: OutputContext, table: str) -> list[tuple[str, str]]:
    """The output's columns and DuckDB types: the declared schema, else the lake table's."""
    schema = _declared_schema(context)
    if schema is not None:
        return [(column.name, column.type) for column in schema.columns]
    return lake_columns()[table]


COMMIT_ATTEMPTS = 5
"""Tries of one write whose commit meets a concurrent commit on the same files (a compaction, a
run of neighbouring hours whose rows share a file after compaction, or of the same hour)."""


def _replayable(query: DuckDBQuery) -> bool:
    """Whether the query can run again: it reads stored tables and Arrow tables or frames only
    (a record-batch reader, such as the landing's stream of lines, is consumed by one run)."""
    return all(isinstance(data, (pa.Table, pd.DataFrame)) for data in query.arrow.values())


def _write_with_retries(context: OutputContext, write: Callable[[], int], refresh: Callable[[], None],
                        replayable: bool = True) -> int:
    """``refresh()`` (the connection's views to the tables' latest versions) then ``write()``, and
    again while its commit fails on a concurrent commit, up to :data:`COMMIT_ATTEMPTS` tries with a
    growing random pause: each try re-runs its query over the versions current then. The last
    write wins: an hour written twice holds one write's rows, never both.

    Raises:
        deltalake.exceptions.CommitFailedError: still conflicting after the tries (or not replayable).
    """
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            if replayable:  # a stream (the landing's lines) is read once, over what it was opened on
                refresh()
            return write()
        except CommitFailedError as exc:
            if not replayable or attempt == COMMIT_ATTEMPTS:
                raise
            pause = random.uniform(0.5, 1.5) * attempt
            context.log.warning(f"{context.asset_key.to_user_string()}: commit {attempt} of {COMMIT_ATTEMPTS} met a "
                                f"concurrent commit ({str(exc).splitlines()[0]}); writing again in {pause:.1f} s")
            time.sleep(pause)
    raise AssertionError("unreachable")


class LakeQueryTypeHandler(DuckDBQueryTypeHandler):
    """Runs a :class:`DuckDBQuery` into one Delta commit replacing its slice; loads like the DuckDB handler."""

    def __init__(self, lake_uri: str) -> None:
        self.lake_uri = lake_uri

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: DuckDBQuery, connection):
        lake, table = Lake(self.lake_uri), table_slice.table
        columns = _target_columns(context, table)
        for name, data in obj.arrow.items():
            connection.register(name, data)
        try:
            check_columns(table, [name for name, _ in columns], _columns(connection, obj))
            select = ", ".join(f'CAST("{name}" AS {kind}) AS "{name}"' for name, kind in columns)
            rows = _write_with_retries(context, lambda: replace_slice(
                lake, table, connection.execute(f"SELECT {select} FROM ({obj.sql})", dict(obj.params))
                .to_arrow_reader(ARROW_BATCH_ROWS), slice_predicate(table_slice)),
                lambda: attach_lake(connection, lake), _replayable(obj))
        finally:
            for name in obj.arrow:
                connection.unregister(name)
        book = materialized_rows(context, table_slice)
        if book is not None:
            sql, params, window = book
            _write_with_retries(context, lambda: replace_slice(
                lake, "_materialized", connection.execute(sql, params).to_arrow_reader(), book_predicate(table, window)),
                lambda: attach_lake(connection, lake))
        obj.stored.update(rows=int(rows), table=f"{table_slice.schema}.{table}")
        return stored_metadata(context, connection, table_slice, int(rows))


class LakePandasTypeHandler(DbTypeHandler[pd.DataFrame]):
    """A pandas frame (small tables, tests) stored like a query over it."""

    def __init__(self, lake_uri: str) -> None:
        self.queries = LakeQueryTypeHandler(lake_uri)

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        return self.queries.handle_output(context, table_slice,
                                          DuckDBQuery("SELECT * FROM _hipages_frame", arrow={"_hipages_frame": obj}),
                                          connection)

    def load_input(self, context, table_slice: TableSlice, connection) -> pd.DataFrame:
        query = self.queries.load_input(context, table_slice, connection)
        return connection.execute(query.sql).df()

    @property
    def supported_types(self):
        return [pd.DataFrame]


class LakeDbClient(DuckDbClient):
    """Connections to the scratch DuckDB with the lake attached; a slice is replaced by the write's
    own commit, so there is no separate delete (and no transaction to hold)."""

    @staticmethod
    def delete_table_slice(context, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    def ensure_schema_exists(context, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator[duckdb.DuckDBPyConnection]:
        config = context.resource_config
        con = open_database(scratch_database(Path(config["database"]).parent), config["connection_config"],
                            wait_seconds=0)
        try:
            attach_lake(con, Lake(config["lake_uri"]))
            yield con
        finally:
            detach_lake(con)
            con.close()


def lake_db_io_manager(database: str, schema: str | None, lake_uri: str, default_load_type) -> DbIOManager:
    """The IO manager of the ``delta`` storage (see the module docstring), built by
    :class:`~hipages_pipeline.defs.io_manager.HipagesDuckDBIOManager` when its ``lake_uri`` is set.

    Raises (when storing):
        SchemaMismatchError: an output's columns differ from the asset's declared column schema.
        deltalake.exceptions.CommitFailedError: still conflicting after the tries.
    """
    return DbIOManager(
        db_client=LakeDbClient(),
        database=database,
        schema=schema,
        type_handlers=[LakeQueryTypeHandler(lake_uri), LakePandasTypeHandler(lake_uri)],
        default_load_type=default_load_type,
        io_manager_name="HipagesDuckDBIOManager (delta)",
    )
