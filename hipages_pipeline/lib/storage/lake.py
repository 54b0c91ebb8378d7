"""Delta Lake tables (``HIPAGES_STORAGE=delta``): where the tables live when many runs and readers
share them. DuckDB stays the engine: a connection sees each Delta table as a view
``analytics.<name>`` (over the table's Arrow dataset at the version current when the connection
was opened), and a write replaces exactly one slice of a table in one Delta commit (delta-rs'
overwrite with a predicate), so concurrent writers of disjoint slices both commit, and a reader
never sees half a write.

The lake is a folder (local path) or an S3 prefix (``s3://bucket/prefix``): endpoint, region and
credentials come from the standard ``AWS_*`` environment variables (see :func:`storage_options`).
Each table is ``<lake uri>/<table name>``. Timestamps are naive UTC (``timestamp_ntz``, a Delta
table feature that Spark 3.4+, Trino and Polars read).

Errors: ``deltalake.exceptions.CommitFailedError`` when a concurrent commit touched the same
slice (the write is not applied); ``LakeError`` for a bad URI.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

LAKE_SCHEMA = "analytics"
"""Schema of the views through which a DuckDB connection reads the lake's tables."""

_S3_ENV = {  # environment variable -> delta-rs option (object_store's names); AWS_REGION wins (last)
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION": "AWS_REGION", "AWS_REGION": "AWS_REGION",
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP": "AWS_ALLOW_HTTP",
}


class LakeError(ValueError):
    """The lake URI cannot be used (one-line reason)."""


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs storage options for ``uri``: for ``s3://``, the ``AWS_*`` variables that are set
    (endpoint, region, credentials; ``AWS_ALLOW_HTTP=true`` for an http endpoint) and S3's
    conditional writes for concurrent commits (the endpoint must honour ``If-None-Match``, as S3,
    current MinIO and moto do: on one that ignores it two commits of one version could overwrite
    each other); None for a local folder."""
    if not uri.startswith("s3://"):
        return None
    options = {option: os.environ[env] for env, option in _S3_ENV.items() if os.environ.get(env)}
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    options.setdefault("AWS_REGION", "us-east-1")
    options.setdefault("conditional_put", "etag")  # commits are put-if-absent: no lock table needed
    return options


def check_lake_uri(uri: str | None) -> str:
    """``uri`` without a trailing slash; local folders made absolute.

    Raises:
        LakeError: no URI, or a scheme other than a local path or ``s3://``.
    """
    if not uri:
        raise LakeError("the delta storage needs a lake URI: set HIPAGES_LAKE_URI or --lake-uri "
                        "(a folder, or s3://bucket/prefix)")
    if "://" in uri and not uri.startswith(("s3://", "file://")):
        raise LakeError(f"lake URI {uri!r}: expected a folder or s3://bucket/prefix")
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if "://" not in uri:
        uri = os.path.abspath(uri)
    return uri.rstrip("/")


@contextmanager
def lake_errors(uri: str | None) -> Iterator[None]:
    """Turn what the object store or delta-rs raise about the lake into :class:`LakeError` with
    one line naming the URI (a missing permission, an unreachable endpoint, a wrong bucket)."""
    try:
        yield
    except (DeltaError, OSError) as exc:
        if not uri or isinstance(exc, CommitFailedError):
            raise
        reason = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
        raise LakeError(f"cannot use the lake {uri}: {reason[:400]}") from exc


def arrow_schema(ddl_columns: Iterable[tuple[str, str]]) -> pa.Schema:
    """The Arrow schema DuckDB gives columns of these DuckDB types (``(name, type)`` pairs)."""
    con = duckdb.connect()
    try:
        columns = ", ".join(f'"{name}" {kind}' for name, kind in ddl_columns)
        con.execute(f"CREATE TABLE t ({columns})")
        return con.execute("SELECT * FROM t").to_arrow_table().schema
    finally:
        con.close()


def sql_literal(value: object) -> str:
    """A SQL literal for a predicate (strings quoted, times as ``'YYYY-MM-DD HH:MM:SS'``)."""
    if isinstance(value, datetime):
        value = f"{value:%Y-%m-%d %H:%M:%S}"
    return "'" + str(value).replace("'", "''") + "'"


class Lake:
    """The Delta tables under one URI, with the DeltaTable objects of this process cached (a
    refresh reads only the new commits)."""

    _cache: dict[str, DeltaTable] = {}
    _datasets: dict[tuple[str, int], object] = {}
    _lock = threading.Lock()

    def __init__(self, uri: str) -> None:
        self.uri = check_lake_uri(uri)
        self.options = storage_options(self.uri)

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def table(self, name: str) -> DeltaTable | None:
        """The table at its latest version, or None when it was never created."""
        uri = self.table_uri(name)
        with self._lock:
            table = self._cache.get(uri)
            try:
                if table is None:
                    table = self._cache[uri] = DeltaTable(uri, storage_options=self.options)
                else:
                    table.update_incremental()
            except TableNotFoundError:
                return None
            return table

    def _dataset(self, name: str, table: DeltaTable):
        """The table's Arrow dataset at its loaded version (built once per version: building it
        lists the version's files)."""
        with self._lock:
            key = (self.table_uri(name), table.version())
            dataset = Lake._datasets.get(key)
            if dataset is None:
                dataset = table.to_pyarrow_dataset()
                for stale in [k for k in Lake._datasets if k[0] == key[0]]:
                    del Lake._datasets[stale]
                Lake._datasets[key] = dataset
            return dataset

    def create(self, name: str, schema: pa.Schema) -> bool:
        """Create the table empty when missing; True when this call created it. Two processes
        creating it at once: one commits version 0, the other finds it (no error)."""
        if self.table(name) is not None:
            return False
        try:
            DeltaTable.create(self.table_uri(name), schema=schema, mode="ignore", storage_options=self.options)
        except Exception:  # noqa: BLE001 - a concurrent creation: fine when the table now exists
            if self.table(name) is None:
                raise
            return False
        return True

    def attach(self, con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> None:
        """Make each existing table readable on ``con`` as ``analytics.<name>``: its dataset at the
        latest version is registered as ``lake_<name>`` and a view names it."""
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE_SCHEMA}")
        for name in names:
            table = self.table(name)
            if table is None:
                continue
            con.register(f"lake_{name}", self._dataset(name, table))  # replaces an earlier registration
            con.execute(f'CREATE VIEW IF NOT EXISTS {LAKE_SCHEMA}."{name}" AS SELECT * FROM lake_{name}')

    def replace(self, name: str, batches: pa.RecordBatchReader, predicate: str | None) -> int:
        """Replace the rows matching ``predicate`` (all rows when None) by ``batches``, in one
        commit; the number of rows written. ``batches`` must have the table's schema.

        Raises:
            deltalake.exceptions.CommitFailedError: a concurrent commit changed the same rows.
        """
        written = [0]

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                written[0] += batch.num_rows
                yield batch

        reader = pa.RecordBatchReader.from_batches(batches.schema, counted())
        write_deltalake(self.table_uri(name), reader, mode="overwrite", predicate=predicate,
                        storage_options=self.options)
        return written[0]
