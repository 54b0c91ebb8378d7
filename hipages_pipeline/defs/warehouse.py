"""The ``warehouse`` resource: the DuckDB database that holds the tables (see
:class:`DuckDBWarehouse`), or, on the ``delta`` storage, the DuckDB engine of one process over the
Delta tables of a lake; with the output's settings and the clean-up of a killed run's leftovers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, Failure, InitResourceContext, TimeWindow
from dagster._core.storage.db_io_manager import TablePartitionDimension, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from deltalake.exceptions import CommitFailedError

from hipages_pipeline.defs.lake_tables import attach_lake, detach_lake, ensure_lake_tables, lake_columns, replace_slice
from hipages_pipeline.lib.contract import REJECTED_FILE, TABLES, Table
from hipages_pipeline.lib.events.validation import check_source_timezone
from hipages_pipeline.lib.storage.duckdb_files import (
    lock_wait_seconds,
    open_database,
    remove_dead_scratch_files,
    scratch_database,
)
from hipages_pipeline.lib.storage.lake import Lake, lake_errors

DATABASE_FILE = "hipages.duckdb"
DATABASE_SCHEMA = "analytics"
"""Schema of the tables in the database (not "hipages": that is the database file's catalog name)."""
SETTINGS_TABLE = f"{DATABASE_SCHEMA}._settings"
"""The output directory's settings: ``key`` and ``value`` (VARCHAR); ``source_timezone`` is the IANA
zone its hours were computed in, written by the first run."""
STAGING_SCHEMA = "staging"



def stored_table(con: duckdb.DuckDBPyConnection, table: Table) -> str:
    """The table's qualified name (``analytics.<name>``), after creating it empty from the contract
    when no run has stored it yet (a reader then finds it empty instead of missing)."""
    name = f"{DATABASE_SCHEMA}.{table.name}"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE_SCHEMA}")
    con.execute(table.ddl(name))
    return name


def _stored_timezone(con: duckdb.DuckDBPyConnection) -> str | None:
    """The source time zone in ``analytics._settings`` (a table or a Delta table's view), or None."""
    row = con.execute(f"SELECT value FROM {SETTINGS_TABLE} WHERE key = 'source_timezone'").fetchone()
    return row[0] if row else None


class SourceTimezoneMismatchError(ValueError):
    """The output directory's hours were computed in another source time zone than this run's."""


_OWN_STAGING_TABLES: set[str] = set()
"""Staging tables this process is using (created by :meth:`DuckDBWarehouse.staging_table`, not yet
dropped): the leftover clean-up keeps them."""
_OWN_STAGING_LOCK = threading.Lock()


DEFAULT_MEMORY_LIMIT = "1GB"
DEFAULT_THREADS = 2


class DuckDBWarehouse(ConfigurableResource):
    """The DuckDB database that holds the tables, and how much of the machine DuckDB may use.

    The same settings open every connection of a run (the IO manager's and the assets' own, which
    read upstream slices and evaluate checks), so they share one database instance in the process.

    Attributes:
        database: path of the DuckDB file (created with its directory when missing).
        memory_limit: DuckDB's ``memory_limit`` (e.g. ``1GB``): sorts, joins and aggregates past
            it spill to ``<database>.tmp``, so memory does not grow with the data of a run.
        threads: DuckDB's worker threads (default 2, the machine's cores).
        source_timezone: the source's time zone (set by :func:`make_resources`): a run checks it
            against the output directory's (see :meth:`claim_source_timezone`); None checks nothing.
        rebuild: when the output directory's time zone differs, drop its tables and store the new
            zone instead of refusing the run (same zone: nothing is dropped).
        lock_wait_seconds: how long opening the file waits while another process (a run, or a
            reader) holds it, before failing with a one-line message; None (the default):
            ``HIPAGES_DUCKDB_LOCK_WAIT_SECONDS``, else 600 (see
            :func:`hipages_pipeline.lib.storage.duckdb_files.open_database`).
        lake_uri: the ``delta`` storage: the tables are Delta tables under this URI (a folder or
            ``s3://bucket/prefix``, see :mod:`hipages_pipeline.lib.storage.lake`), and ``database``
            names the directory of each process's scratch file (staging tables, spills; see
            :meth:`database_file`), removed at exit. None: the DuckDB storage, ``database`` holds
            the tables.

    Setup for a run (:meth:`setup_for_execution`) drops leftover staging tables and checks the
    source time zone.
    """

    database: str
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    threads: int = DEFAULT_THREADS
    source_timezone: str | None = None
    rebuild: bool = False
    lock_wait_seconds: float | None = None
    lake_uri: str | None = None

    def database_file(self) -> str:
        """The DuckDB file this process opens: ``database``, or on ``delta`` this process's own
        scratch file beside it (``.hipages-scratch-<host>-<pid>.duckdb``: parallel runs never share one)."""
        return str(scratch_database(Path(self.database).parent)) if self.lake_uri else self.database

    def lake(self) -> Lake | None:
        """The Delta lake of the ``delta`` storage (``lake_uri``), None on the DuckDB storage."""
        return Lake(self.lake_uri) if self.lake_uri else None

    def connection_config(self) -> dict[str, object]:
        """DuckDB settings of every connection (also the IO manager's ``connection_config``)."""
        # Rows keep no insertion order unless a query asks for one (every CSV has its ORDER BY):
        # DuckDB then needs less memory for large inserts and aggregates.
        return {"memory_limit": self.memory_limit, "threads": self.threads, "preserve_insertion_order": False}

    def check_settings(self) -> None:
        """Check the settings before any run: ``lock_wait_seconds`` (or the environment's),
        ``memory_limit`` and ``threads`` (on an in-memory database), then the source time zone against the output directory's (which claims it, see
        :meth:`claim_source_timezone`; skipped when ``source_timezone`` is None).

        Raises:
            ValueError: invalid DuckDB settings (DuckDB's reason), an invalid lock wait, or an
                unknown time zone.
            SourceTimezoneMismatchError: the output directory has another time zone (no rebuild).
            DatabaseLockedError: another process held the file past the lock wait.
        """
        lock_wait_seconds(self.lock_wait_seconds)
        try:
            duckdb.connect(config=self.connection_config()).close()
        except (duckdb.Error, TypeError) as exc:
            raise ValueError(f"invalid DuckDB settings memory_limit={self.memory_limit!r}, "
                             f"threads={self.threads!r}: {exc}") from exc
        with lake_errors(self.lake_uri):
            if self.lake_uri:
                ensure_lake_tables(self.lake())  # before any run writes: first commits would race
            if self.source_timezone is not None:
                self.claim_source_timezone(self.source_timezone, self.rebuild)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """At the start of every run that uses the warehouse (CLI, ``dagster job execute``, UI):
        drop leftover staging tables (:meth:`drop_leftover_staging_tables`), then check and claim
        ``source_timezone`` (:meth:`claim_source_timezone`). Waits while another process holds
        the file's lock, as every open does (:meth:`connect`).

        Raises:
            dagster.Failure: the time zone is unknown or differs from the output directory's (the
                message names both zones and the directory), or the lake cannot be used (one line).
            DatabaseLockedError: another process held the file past the lock wait.
        """
        try:
            with lake_errors(self.lake_uri):
                if self.lake_uri:  # the tables exist before a connection attaches them
                    remove_dead_scratch_files(Path(self.database).parent)
                    ensure_lake_tables(self.lake())
                with self.connect() as con:
                    dropped = self.drop_leftover_staging_tables(con)
                    if self.source_timezone is not None:
                        self._claim(con, self.source_timezone, self.rebuild)
        except ValueError as exc:
            raise Failure(description=str(exc)) from exc
        if dropped and context.log:
            context.log.info(f"dropped staging tables of killed runs: {', '.join(dropped)}")

    @staticmethod
    def drop_leftover_staging_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
        """Drop the ``staging.*`` tables that this process is not using; return their names.

        They are leftovers of killed runs: a staging table lives only while its run's connection
        is open, and DuckDB lets one process at a time open the file for writing, so a table
        present when this process opens the file was made by a process that is gone (or by this
        one: those in use by :meth:`staging_table` are kept).
        """
        with _OWN_STAGING_LOCK:
            own = set(_OWN_STAGING_TABLES)
        found = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = ?",
                            [STAGING_SCHEMA]).fetchall()
        leftovers = [name for (name,) in found if f"{STAGING_SCHEMA}.{name}" not in own]
        for name in leftovers:
            con.execute(f'DROP TABLE IF EXISTS {STAGING_SCHEMA}."{name}"')
        return [f"{STAGING_SCHEMA}.{name}" for name in leftovers]

    def claim_source_timezone(self, timezone: str, rebuild: bool = False) -> None:
        """Check ``timezone`` against the one stored in the output directory's database
        (``analytics._settings``) and store it when none is (the first run, or a database from
        before this setting: its hours are taken as computed in ``timezone``).

        With another stored zone and ``rebuild``, drop every table of the ``analytics`` schema and
        store ``timezone``; all in one transaction.

        Raises:
            ValueError: ``timezone`` is not a known IANA time zone (nothing is stored).
            SourceTimezoneMismatchError: another zone is stored and ``rebuild`` is False.
        """
        with self.connect() as con:
            self._claim(con, timezone, rebuild)

    def _claim(self, con: duckdb.DuckDBPyConnection, timezone: str, rebuild: bool) -> None:
        check_source_timezone(timezone)
        if self.lake_uri:
            return self._claim_in_lake(con, timezone, rebuild)
        rebuilt = False
        con.begin()
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE_SCHEMA}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {SETTINGS_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            row = _stored_timezone(con)
            if row is None:
                con.execute(f"INSERT INTO {SETTINGS_TABLE} VALUES ('source_timezone', ?)", [timezone])
            elif row != timezone:
                if not rebuild:
                    raise SourceTimezoneMismatchError(
                        f"The output directory {Path(self.database).parent} holds hours computed with source time "
                        f"zone {row!r}, not {timezone!r}: use {row!r}, another output directory, or rebuild "
                        f"(CLI --rebuild, or the warehouse resource's rebuild: true) to drop its tables and "
                        f"recompute them in {timezone!r}.")
                for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = ? "
                                           "AND table_name <> '_settings'", [DATABASE_SCHEMA]).fetchall():
                    con.execute(f'DROP TABLE {DATABASE_SCHEMA}."{name}"')
                con.execute(f"UPDATE {SETTINGS_TABLE} SET value = ? WHERE key = 'source_timezone'", [timezone])
                rebuilt = True
        except BaseException:
            con.rollback()
            raise
        con.commit()
        if rebuilt:
            self._remove_csv_files()

    def _claim_in_lake(self, con: duckdb.DuckDBPyConnection, timezone: str, rebuild: bool) -> None:
        """:meth:`_claim` on the ``delta`` storage: ``_settings`` is a Delta table; a rebuild
        empties every table (one commit each)."""
        lake = self.lake()
        row = _stored_timezone(con)
        if row not in (None, timezone) and not rebuild:
            raise SourceTimezoneMismatchError(
                f"The lake {lake.uri} holds hours computed with source time zone {row!r}, not {timezone!r}: "
                f"use {row!r}, another lake, or rebuild (CLI --rebuild) to empty its tables.")
        if row not in (None, timezone):
            for name in lake_columns():
                if name != "_settings":
                    replace_slice(lake, name, con.execute(f'SELECT * FROM {DATABASE_SCHEMA}."{name}" LIMIT 0').to_arrow_reader(), None)
            self._remove_csv_files()
        if row != timezone:
            try:
                replace_slice(lake, "_settings", con.execute("SELECT 'source_timezone' AS key, ? AS value", [timezone])
                              .to_arrow_reader(), "\"key\" = 'source_timezone'")
            except CommitFailedError:  # another process claimed it meanwhile: its zone must be ours
                attach_lake(con, lake)
                found = _stored_timezone(con)
                if found != timezone:
                    raise SourceTimezoneMismatchError(
                        f"The lake {lake.uri} was just claimed for source time zone {found!r}, "
                        f"not {timezone!r}") from None

    def _remove_csv_files(self) -> None:
        """After a rebuild: the CSV files beside the database (hour files and whole files) hold
        hours of the old time zone; remove them so that no reader counts an event twice."""
        output_dir = Path(self.database).parent
        for table in TABLES.values():
            if table.csv is not None:
                for path in (output_dir / table.csv.directory).glob("*.csv"):
                    path.unlink(missing_ok=True)
                (output_dir / table.csv.whole_file).unlink(missing_ok=True)
        (output_dir / REJECTED_FILE).unlink(missing_ok=True)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the database (session time zone UTC), closed on exit: keep it short,
        other processes (runs, readers) wait for it.

        Waits while another process holds the file, up to ``lock_wait_seconds``.

        Raises:
            DatabaseLockedError: another process held the file past the wait (one-line message).
            duckdb.IOException: the file cannot be opened for another reason (permissions, ...).
        """
        con = open_database(self.database_file(), self.connection_config(), wait_seconds=self.lock_wait_seconds)
        try:
            if self.lake_uri:
                attach_lake(con, self.lake())
            yield con
        finally:
            detach_lake(con)
            con.close()

    @staticmethod
    def slice_sql(table: str, partition_expr: str, window: tuple[datetime, datetime]) -> str:
        """The SELECT of a stored table's rows whose ``partition_expr`` is in [start, end) (naive
        UTC): the IO manager's own SELECT of that slice (dagster-duckdb's client builds both)."""
        return DuckDbClient.get_select_statement(TableSlice(
            table=table, schema=DATABASE_SCHEMA, database=None,
            partition_dimensions=[TablePartitionDimension(partition_expr, TimeWindow(*window))]))

    @staticmethod
    @contextmanager
    def staging_table(con: duckdb.DuckDBPyConnection, name: str) -> Iterator[str]:
        """A fresh table name ``staging.<name>_<random>`` for an intermediate result that the IO
        manager's connection must see (temporary tables are private to their connection); the
        table, if created, is dropped on exit, also on failure (a killed run's, by the next run's
        setup: :meth:`drop_leftover_staging_tables`)."""
        table = f"{STAGING_SCHEMA}.{name}_{uuid.uuid4().hex[:12]}"
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA}")
        with _OWN_STAGING_LOCK:
            _OWN_STAGING_TABLES.add(table)
        try:
            yield table
        finally:
            try:
                con.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                with _OWN_STAGING_LOCK:
                    _OWN_STAGING_TABLES.discard(table)
