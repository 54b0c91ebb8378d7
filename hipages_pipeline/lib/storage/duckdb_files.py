"""Opening the DuckDB database file: the one place where a connection is set up.

Every connection of a run (the IO manager's, the assets' own for checks and exports) opens the file
with the same settings, so DuckDB shares one database instance in the process; the session time
zone is UTC (the tables store naive UTC times).

DuckDB lets one process at a time open the file for writing, and no other process read it
meanwhile (a read-only connection locks writers out too). So every open, for writing or reading,
waits while another process holds the file: it retries with a short, growing sleep (0.05 s, then
x1.5 up to 1 s) for at most ``wait_seconds`` (for writers ``HIPAGES_DUCKDB_LOCK_WAIT_SECONDS``,
default 600), then raises :class:`DatabaseLockedError` with a one-line message. Holders keep their
connections short, so a waiting process gets the file between a run's steps or queries.
"""

from __future__ import annotations

import atexit
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import duckdb

from hipages_pipeline.lib.processes import host_name, process_exists

LOCK_WAIT_ENV = "HIPAGES_DUCKDB_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_SECONDS = 600.0
"""How long a writer's open waits for the file's lock by default (a whole run of another process
may hold it between its steps)."""
FIRST_SLEEP_SECONDS = 0.05
MAX_SLEEP_SECONDS = 1.0


class DatabaseLockedError(RuntimeError):
    """Another process holds the DuckDB file's lock (past the wait, when there was one)."""


def lock_wait_seconds(value: float | str | None = None) -> float:
    """The bound of a lock wait: ``value`` when given, else ``HIPAGES_DUCKDB_LOCK_WAIT_SECONDS``,
    else 600.

    Raises:
        ValueError: the value is not a number of seconds >= 0.
    """
    source = f"{LOCK_WAIT_ENV}" if value is None else "lock_wait_seconds"
    if value is None:
        value = os.environ.get(LOCK_WAIT_ENV) or DEFAULT_LOCK_WAIT_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{source} must be a number of seconds >= 0, got {value!r}")
    return seconds


def _connect_once(database: str | Path, config: Mapping[str, object], read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(database=str(database), read_only=read_only,
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


def open_database(database: str | Path, config: Mapping[str, object] | None = None, *,
                  read_only: bool = False, wait_seconds: float | None = None,
                  longer_wait_hint: str = LOCK_WAIT_ENV) -> duckdb.DuckDBPyConnection:
    """A connection to ``database``, time zone UTC, waiting while another process holds the file.

    For writing (the default) the file's directory is created when missing. The open is retried
    while the file is locked by another process (a run, or a reader), sleeping 0.05 s, then 1.5
    times longer each time up to 1 s, for at most ``wait_seconds`` (None:
    :func:`lock_wait_seconds`, i.e. ``HIPAGES_DUCKDB_LOCK_WAIT_SECONDS`` or 600; 0: one try).
    ``longer_wait_hint`` names the setting that waits longer, for the message.

    Raises:
        DatabaseLockedError: still locked after the wait; the one-line message names the file, the
            wait and the holder's process id when DuckDB reports it.
        duckdb.IOException: the file cannot be opened for another reason (permissions, missing
            when ``read_only``, ...).
        ValueError: ``wait_seconds`` (or the environment's) is not a number of seconds >= 0.
    """
    bound = lock_wait_seconds(wait_seconds)
    if not read_only:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sleep = FIRST_SLEEP_SECONDS
    while True:
        try:
            return _connect_once(database, config or {}, read_only)
        except DatabaseLockedError as exc:
            waited = time.monotonic() - started
            if waited >= bound:
                raise DatabaseLockedError(_locked_message(database, waited, read_only, str(exc), longer_wait_hint)) from exc
        time.sleep(min(sleep, max(bound - waited, 0.0)))
        sleep = min(sleep * 1.5, MAX_SLEEP_SECONDS)


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists, as a table or a view (a Delta table read through a view);
    looked up, so that no error aborts an open transaction."""
    return bool(con.execute("SELECT (SELECT count(*) FROM duckdb_tables() WHERE schema_name = $s AND table_name = $t)"
                            " + (SELECT count(*) FROM duckdb_views() WHERE schema_name = $s AND view_name = $t)",
                            {"s": schema, "t": table}).fetchone()[0])


def _locked_message(database: str | Path, waited: float, read_only: bool, duckdb_message: str, hint: str) -> str:
    holder = ""
    if "(PID " in duckdb_message:
        holder = " (PID " + duckdb_message.split("(PID ", 1)[1].split(")", 1)[0] + ")"
    return (f"{database} is locked: waited {waited:.1f} s to open it {'read-only' if read_only else 'for writing'}, "
            f"but another process{holder} holds it (a hipages-pipeline run, or a reader such as "
            f"`hipages-pipeline sql` or an open DuckDB connection); try again when it is done, "
            f"or wait longer with {hint}")


SCRATCH_PREFIX = ".hipages-scratch-"
SCRATCH_NAME = ".hipages-scratch.duckdb"
"""The ``delta`` storage's ``database`` setting: each process opens
``.hipages-scratch-<host>-<pid>.duckdb`` beside it instead."""


def scratch_database(directory: str | Path) -> Path:
    """This process's scratch DuckDB file in ``directory``, ``.hipages-scratch-<host>-<pid>.duckdb``
    (the ``delta`` storage's engine: staging tables and spills, no table of record; the host name
    keeps run containers that share the directory apart), removed when the process exits; a killed
    process's is removed by the next run's setup on that host (:func:`remove_dead_scratch_files`)."""
    path = Path(directory) / f"{SCRATCH_PREFIX}{host_name()}-{os.getpid()}.duckdb"
    if path not in _SCRATCH_FILES:
        _SCRATCH_FILES.add(path)
        if len(_SCRATCH_FILES) == 1:
            atexit.register(_remove_own_scratch_files)
    return path


_SCRATCH_FILES: set[Path] = set()


def _remove_scratch(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal"), path.with_name(path.name + ".tmp")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _remove_own_scratch_files() -> None:
    for path in _SCRATCH_FILES:
        _remove_scratch(path)


def remove_dead_scratch_files(directory: str | Path) -> list[Path]:
    """Remove the scratch files of this host in ``directory`` whose process is gone; return them."""
    removed = []
    for path in Path(directory).glob(f"{SCRATCH_PREFIX}{host_name()}-*.duckdb"):
        pid = path.name.removeprefix(f"{SCRATCH_PREFIX}{host_name()}-").removesuffix(".duckdb")
        if pid.isdigit() and not process_exists(int(pid)):
            _remove_scratch(path)
            removed.append(path)
    return removed
