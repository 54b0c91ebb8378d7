"""Land: source files -> ``landed_lines`` + ``landed_files``, one partition per source file.

Each file is read once, when it is new or changed (``hipages-pipeline run`` and the landing-files
sensor decide which, by path, size and modification time). A run lands one file or a range of
them (the files' dynamic partitions, one run per range); re-landing a file replaces exactly its
rows, in one transaction per table (``landed_lines`` first, then ``landed_files``: a run killed
between the two leaves the file's old ``landed_files`` row, so the file is seen as changed and
landed again).
"""


import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from dagster import AssetExecutionContext, AssetOut, Failure, MetadataValue, Output, multi_asset

from hipages_pipeline.defs.common import GROUP, OWNERS, describe, source_errors_as_failure, table_metadata, utc_now
from hipages_pipeline.defs.io_manager import DuckDBQuery
from hipages_pipeline.defs.land.checks import LANDING_CHECKS, check_file_lines_accounted
from hipages_pipeline.defs.partitions import partition_key, run_ranges, single_run_backfill, source_file_partitions
from hipages_pipeline.defs.resources import DATABASE_SCHEMA, DuckDBWarehouse, EventSource
from hipages_pipeline.lib.contract import LANDED_FILES, LANDED_LINES
from hipages_pipeline.lib.sql.landing import FileLander
from hipages_pipeline.lib.storage.duckdb_files import table_exists

LANDED = f"{DATABASE_SCHEMA}.landed_lines"
LANDING_KEYS = ("landed_lines", "landed_files")


def file_stats(paths: list[str]) -> dict[str, tuple[int, int]]:
    """(size in bytes, mtime in ns) of each file, taken before it is read (a file that changes
    while it is read is then seen as changed by the next run).

    Raises:
        dagster.Failure: a file is gone or unreadable (nothing is written; its earlier rows are kept).
    """
    stats = {}
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise Failure(description=f"cannot land source file {path}: {exc.strerror or exc}; nothing was "
                          "written (its earlier rows, if any, are kept)") from exc
        stats[path] = (stat.st_size, stat.st_mtime_ns)
    return stats


def _landed_of(warehouse: DuckDBWarehouse, files: list[str]) -> tuple[set[datetime], int, int]:
    """(the UTC hours, events, rejected lines) of the stored lines of ``files``."""
    with warehouse.connect() as con:
        if not table_exists(con, DATABASE_SCHEMA, "landed_lines"):
            return set(), 0, 0
        con.register("run_files", pa.table({"source_file": pa.array(files, pa.string())}))
        rows = con.execute(f"SELECT hour, count(*) FILTER (WHERE reason IS NULL), count(reason) FROM {LANDED} "
                           "SEMI JOIN run_files USING (source_file) GROUP BY hour").fetchall()
        con.unregister("run_files")
    return ({hour for hour, _, _ in rows if hour is not None}, sum(int(row[1]) for row in rows),
            sum(int(row[2]) for row in rows))


def hours_metadata(hours: set[datetime]) -> dict[str, object]:
    """The hours a landing touched, as metadata: ``hours`` (ranges ``first..last`` of partition
    keys, contiguous hours as one) and ``hours_touched`` (how many)."""
    ranges = [key.start if key.start == key.end else f"{key.start}..{key.end}"
              for key in run_ranges(partition_key(hour) for hour in hours)]
    return {"hours": MetadataValue.json(ranges), "hours_touched": len(hours)}


@multi_asset(
    outs={
        "landed_lines": AssetOut(description=describe(LANDED_LINES), group_name=GROUP, owners=OWNERS,
                                 kinds={"duckdb"}, metadata=table_metadata(LANDED_LINES)),
        "landed_files": AssetOut(description=describe(LANDED_FILES), group_name=GROUP, owners=OWNERS,
                                 kinds={"duckdb"}, metadata=table_metadata(LANDED_FILES)),
    },
    check_specs=LANDING_CHECKS,
    partitions_def=source_file_partitions,
    backfill_policy=single_run_backfill,
)
def land_files(context: AssetExecutionContext, source: EventSource, warehouse: DuckDBWarehouse) -> Iterator:
    """Read the run's files (its partitions) once; store every line and each file's accounting.

    The lines stream from the files into DuckDB in Arrow batches (memory does not grow with the
    files). ``landed_files``' metadata: ``files``, ``lines`` (read), ``events``, ``rejected``
    (stored) and ``hours``, the UTC hours whose lines changed (the files' hours before and after):
    the hourly assets to materialize next.

    Raises:
        dagster.Failure: a file is gone or cannot be read, or the source time zone is unknown.
    """
    files = sorted(context.partition_keys)
    stats = file_stats(files)
    landed_at = utc_now()
    before, _, _ = _landed_of(warehouse, files)
    with source_errors_as_failure():
        lander = FileLander([Path(f) for f in files], source.settings(), threads=warehouse.threads)
        rows = DuckDBQuery("SELECT *, $landed_at AS landed_at FROM landing",
                           arrow={"landing": lander.reader()}, params={"landed_at": landed_at})
        yield Output(rows, output_name="landed_lines", metadata={"files": len(files)})
    read = {path: lander.lines_per_file.get(path, 0) for path in files}
    after, events, rejected = _landed_of(warehouse, files)
    touched = before | after
    stats_table = pa.table({
        "source_file": files, "size_bytes": [stats[f][0] for f in files], "mtime_ns": [stats[f][1] for f in files],
        "lines": [read[f] for f in files]})
    accounting = DuckDBQuery(
        f"""SELECT s.source_file, s.size_bytes, s.mtime_ns, s.lines, coalesce(l.events, 0) AS events,
                   coalesce(l.rejected, 0) AS rejected, l.first_hour, l.last_hour, $landed_at AS landed_at
            FROM run_files s LEFT JOIN (
                SELECT source_file, count(*) FILTER (WHERE reason IS NULL) AS events, count(reason) AS rejected,
                       min(hour) AS first_hour, max(hour) AS last_hour
                FROM {LANDED} SEMI JOIN run_files USING (source_file) GROUP BY source_file) l USING (source_file)""",
        arrow={"run_files": stats_table}, params={"landed_at": landed_at})
    lines, stored = sum(read.values()), rows.stored["rows"]
    context.log.info(f"landed {len(files)} file(s): {lines} lines, {stored} rows; "
                     f"{len(touched)} hour(s) touched")
    yield Output(accounting, output_name="landed_files",
                 metadata={"files": len(files), "lines": lines, "events": events, "rejected": rejected,
                           **hours_metadata(touched)})
    with warehouse.connect() as con:
        stored_per_file = {path: (int(events), int(rejected)) for path, events, rejected in con.execute(
            f"SELECT source_file, events, rejected FROM {DATABASE_SCHEMA}.landed_files "
            "WHERE source_file IN (SELECT unnest($files::VARCHAR[]))", {"files": files}).fetchall()}
    yield check_file_lines_accounted(read, stored_per_file)
