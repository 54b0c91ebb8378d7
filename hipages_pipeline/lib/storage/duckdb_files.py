"""Opening the DuckDB database file: the one place where a connection is set up.

Every connection of a run (the IO manager's, the assets' own for checks and exports) opens the file
with the same settings, so DuckDB shares one database instance in the process; the session time
zone is UTC (the tables store naive UTC times).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import duckdb


class DatabaseLockedError(RuntimeError):
    """Another process holds the DuckDB file's write lock."""


def open_database(database: str | Path, config: Mapping[str, object]) -> duckdb.DuckDBPyConnection:
    """A read-write connection to ``database`` (its directory created when missing), time zone UTC.

    Raises:
        DatabaseLockedError: another process holds the file's lock (the message is DuckDB's).
        duckdb.IOException: the file cannot be opened for another reason (permissions, ...).
    """
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(database=str(database), read_only=False,
                             config={"custom_user_agent": "dagster", **dict(config)})
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseLockedError(str(exc)) from exc
        raise
    try:
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con
