"""``hipages-pipeline sql "QUERY"``: one query on an output directory's database, read-only, as CSV.

The database is opened read-only (no run is disturbed for longer than the query: a run's next
open waits for it, see :func:`hipages_pipeline.lib.storage.duckdb_files.open_database`); when a
run holds the file, the command waits for it, up to ``--wait`` seconds (default 60). Tables are
named as in the UI (``cleaned_events``, ``hourly_activity``, ``user_sessions``,
``rejected_events``, ...): the search path is the ``analytics`` schema.

DuckDB writes the result to a temporary CSV file (header row, NULL as an empty field, an empty
string as ``""``), in batches, so memory stays bounded whatever the size of the result; the
connection is closed as soon as the file is written, then the file is copied to stdout (a slow
reader of the output never holds the database).

On the ``delta`` storage (``--storage delta`` / ``HIPAGES_STORAGE=delta``, with ``--lake-uri`` /
``HIPAGES_LAKE_URI``) the query runs in an in-memory DuckDB over each Delta table's latest version
(the same names): it takes no lock, so it never waits for a run nor holds one back.

Exit status: 0 on success; 1 when the database stayed locked past ``--wait``; 2 on a SQL error
(one line on stderr), a missing database or a bad option; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_READ_WAIT_SECONDS = 60.0
"""How long ``sql`` waits by default while a run holds the database (a run of the sample takes
about 20 s; a large backfill can hold it longer: use --wait)."""


def _seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def add_sql(commands, default_output_dir: str) -> None:
    """The ``sql`` subcommand's parser."""
    sql = commands.add_parser(
        "sql", help="run one SQL query on the tables (read-only), print CSV",
        description="Run one SQL query on <output-dir>/hipages.duckdb, opened read-only (or, with --storage "
        "delta, on the Delta tables under --lake-uri, without any lock), and print the result as CSV on "
        "stdout (header row, NULL as an empty field). Tables are named as in the UI (cleaned_events, "
        "hourly_activity, user_sessions, rejected_events, ...). While a run holds the database file, wait "
        "for it (--wait); the file is closed as soon as the query is done.")
    sql.add_argument("query", help="the SQL query, e.g. \"SELECT count(*) FROM cleaned_events\"")
    sql.add_argument("--output-dir", default=os.environ.get("HIPAGES_OUTPUT_DIR", default_output_dir),
                     help="output directory (env HIPAGES_OUTPUT_DIR; default %(default)s)")
    add_storage_options(sql)
    sql.add_argument("--wait", type=_seconds, default=DEFAULT_READ_WAIT_SECONDS, metavar="SECONDS",
                     help="how long to wait while a run (another process) holds the database (default %(default)s)")


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """``--storage`` and ``--lake-uri`` (defaults from ``HIPAGES_STORAGE`` and ``HIPAGES_LAKE_URI``)."""
    parser.add_argument("--storage", choices=("duckdb", "delta"), default=None,
                        help="where the tables live: duckdb (one file in the output directory) or delta "
                        "(Delta tables under --lake-uri) (env HIPAGES_STORAGE; default duckdb)")
    parser.add_argument("--lake-uri", default=None, metavar="URI",
                        help="the delta storage's lake: a folder or s3://bucket/prefix; S3 endpoint and "
                        "credentials from the AWS_* variables (env HIPAGES_LAKE_URI)")


def _attach_or_explain(con, lake_uri: str) -> None:
    """The lake's tables on ``con`` (see :func:`hipages_pipeline.defs.lake_tables.attach_lake`).

    Raises:
        LakeError: the lake holds none of the tables (nothing was run on it yet).
    """
    from hipages_pipeline.defs.lake_tables import attach_lake
    from hipages_pipeline.lib.storage.lake import Lake, LakeError

    attach_lake(con, Lake(lake_uri))
    if not con.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'analytics'").fetchone()[0]:
        raise LakeError("no table there (run `hipages-pipeline run --storage delta` with this lake URI first)")


def _one_line(message: str) -> str:
    """DuckDB's error message on one line, without the query excerpt and its caret."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(message).splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(kept)


def run_sql(args: argparse.Namespace) -> int:
    """Run ``hipages-pipeline sql``; returns the exit status."""
    import duckdb
    from deltalake.exceptions import DeltaError

    from hipages_pipeline.defs.resources import storage_settings
    from hipages_pipeline.defs.warehouse import DATABASE_FILE, DATABASE_SCHEMA
    from hipages_pipeline.lib.storage.duckdb_files import DatabaseLockedError, open_database
    from hipages_pipeline.lib.storage.lake import LakeError

    try:
        _, lake_uri = storage_settings(args.storage, args.lake_uri)
    except ValueError as exc:
        print(f"hipages-pipeline sql: {exc}", file=sys.stderr)
        return 2
    database = Path(args.output_dir) / DATABASE_FILE
    if lake_uri is None and not database.is_file():
        print(f"hipages-pipeline sql: no database at {database} (run `hipages-pipeline run` first, "
              f"or give its --output-dir)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hipages-sql-") as scratch:
        result = Path(scratch) / "result.csv"
        try:
            if lake_uri:
                con = duckdb.connect()
                _attach_or_explain(con, lake_uri)
            else:
                con = open_database(database, {}, read_only=True, wait_seconds=args.wait, longer_wait_hint="--wait")
        except DatabaseLockedError as exc:
            print(f"hipages-pipeline sql: {exc}", file=sys.stderr)
            return 1
        except (duckdb.Error, OSError, DeltaError, LakeError) as exc:
            print(f"hipages-pipeline sql: cannot open {lake_uri or database}: {_one_line(exc)}", file=sys.stderr)
            return 2
        try:
            try:
                con.execute(f"SET search_path = '{DATABASE_SCHEMA}'")
            except duckdb.CatalogException:
                pass  # a database without the schema yet: the query names what it reads
            relation = con.sql(args.query)
            if relation is not None:  # None: a statement without a result (SET ...)
                relation.write_csv(str(result), header=True)
        except duckdb.Error as exc:
            print(f"hipages-pipeline sql: {_one_line(exc)}", file=sys.stderr)
            return 2
        finally:
            con.close()
        if result.exists():
            _copy_to_stdout(result)
    return 0


def _copy_to_stdout(path: Path) -> None:
    """Copy the file to stdout; a reader that stops early (``| head``) is not an error."""
    try:
        sys.stdout.flush()
        with path.open("rb") as file:
            shutil.copyfileobj(file, sys.stdout.buffer, 1 << 20)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
