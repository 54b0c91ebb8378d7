"""What ``hipages-pipeline run`` lands and then materializes, from the database's own records.

- :func:`files_to_land`: the source files that are new or changed since they were landed (by
  path, size and modification time, against ``landed_files``);
- :func:`landing_ranges`: those files as ranges of the ``source_files`` partitions (one landing
  run per range; contiguous in the partitions' order, at most ``max_files`` each);
- :func:`stale_hours`: the UTC hours whose landed lines are newer than their last
  materialization of ``hourly_activity`` (or that never had one): the hours to (re)build;
- :func:`source_accounting`: what the lines of a list of files became;
- :func:`source_state` / :func:`changed_files`: the files as they are now, and which changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa
from dagster import Failure, PartitionKeyRange

from hipages_pipeline.defs.materialized_hours import MATERIALIZED_TABLE
from hipages_pipeline.defs.partitions import hourly_partitions, partition_key
from hipages_pipeline.defs.resources import DATABASE_SCHEMA, DuckDBWarehouse, EventSource
from hipages_pipeline.defs.warehouse import stored_table
from hipages_pipeline.lib.contract import CLEANED_EVENTS, DUPLICATE_EVENTS, LANDED_FILES, LANDED_LINES
from hipages_pipeline.lib.storage.duckdb_files import table_exists

FileState = tuple[int, int]
"""(size in bytes, modification time in ns) of a file."""
FORBIDDEN_IN_PATHS = ("...", "'", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
"""What a path may not hold to be a partition key (Dagster's rule, and the IO manager's SQL quoting)."""


def unlandable(path: str) -> str | None:
    """Why ``path`` cannot be a ``source_files`` partition, else None."""
    bad = next((text for text in FORBIDDEN_IN_PATHS if text in path), None)
    return f"{path!r} cannot be landed: a source file's path may not contain {bad!r} (rename it)" if bad else None


def landed_state(warehouse: DuckDBWarehouse) -> dict[str, FileState]:
    """Each landed file's (size, mtime_ns) as recorded when it was landed."""
    with warehouse.connect() as con:
        if not table_exists(con, DATABASE_SCHEMA, LANDED_FILES.name):
            return {}
        return {path: (size, mtime) for path, size, mtime in con.execute(
            f"SELECT source_file, size_bytes, mtime_ns FROM {DATABASE_SCHEMA}.{LANDED_FILES.name}").fetchall()}


def files_to_land(current: dict[str, FileState], landed: dict[str, FileState]) -> list[str]:
    """The files of ``current`` that were never landed or changed since (size or mtime), sorted."""
    return sorted(path for path, state in current.items() if landed.get(path) != state)


def landing_ranges(to_land: Sequence[str], order: Sequence[str], max_files: int) -> list[PartitionKeyRange]:
    """``to_land`` as ranges of ``order`` (the partitions' order): each range covers only files
    to land, at most ``max_files`` of them."""
    wanted = set(to_land)
    ranges: list[PartitionKeyRange] = []
    block: list[str] = []
    for key in [*order, None]:
        if key in wanted and len(block) < max_files:
            block.append(key)
            continue
        if block:
            ranges.append(PartitionKeyRange(block[0], block[-1]))
        block = [key] if key in wanted else []
    return ranges


def stale_hours(warehouse: DuckDBWarehouse) -> set[str]:
    """The partition keys of the hours whose landed lines were landed after the hour's last
    materialization of ``hourly_activity`` (or that have none), and of the built hours whose stored
    lines (``raw_events`` + ``rejected_events``) are not as many as their landed lines: lines left
    them (a changed file was landed, and the hour was not built since)."""
    landed = f"{DATABASE_SCHEMA}.{LANDED_LINES.name}"
    book = f"{DATABASE_SCHEMA}.{MATERIALIZED_TABLE}"
    with warehouse.connect() as con:
        if not table_exists(con, DATABASE_SCHEMA, LANDED_LINES.name):
            return set()
        done = (f"SELECT hour, max(materialized_at) FILTER (WHERE table_name = 'hourly_activity') AS at, "
                "sum(rows) FILTER (WHERE table_name IN ('raw_events', 'rejected_events')) AS stored "
                f"FROM {book} GROUP BY hour") if table_exists(con, DATABASE_SCHEMA, MATERIALIZED_TABLE) \
            else "SELECT NULL::TIMESTAMP AS hour, NULL::TIMESTAMP AS at, NULL::HUGEINT AS stored"
        rows = con.execute(f"SELECT coalesce(l.hour, m.hour) FROM (SELECT hour, max(landed_at) AS landed_at, "
                           f"count(*) AS lines FROM {landed} WHERE hour IS NOT NULL GROUP BY hour) l "
                           f"FULL JOIN ({done}) m ON l.hour = m.hour "
                           "WHERE (l.hour IS NOT NULL AND (m.at IS NULL OR m.at < l.landed_at)) "
                           "OR (m.stored IS NOT NULL AND coalesce(l.lines, 0) <> m.stored)").fetchall()
    return {partition_key(hour) for (hour,) in rows}


def expand_hours(ranges: Sequence[str]) -> set[str]:
    """Partition keys from ``landed_files``' ``hours`` metadata (``key`` or ``first..last``)."""
    keys: set[str] = set()
    for text in ranges:
        first, _, last = text.partition("..")
        keys.update(hourly_partitions.get_partition_keys_in_range(PartitionKeyRange(first, last or first)))
    return keys


def source_accounting(warehouse: DuckDBWarehouse, files: Sequence[str]) -> tuple[int, int, int, int]:
    """(lines, accepted, duplicates, rejected) of ``files``: lines read at landing
    (``landed_files``), their rows of cleaned_events and duplicate_events, and their quarantined
    lines (``landed_files.rejected``: with or without an hour)."""
    with warehouse.connect() as con:
        landed, cleaned, duplicated = (stored_table(con, t) for t in (LANDED_FILES, CLEANED_EVENTS, DUPLICATE_EVENTS))
        con.register("run_files", pa.table({"source_file": pa.array(list(files), pa.string())}))
        lines, rejected = con.execute(
            f"SELECT coalesce(sum(lines), 0), coalesce(sum(rejected), 0) FROM {landed} "
            "SEMI JOIN run_files USING (source_file)").fetchone()
        accepted, duplicates = (con.execute(
            f"SELECT count(*) FROM {name} SEMI JOIN run_files USING (source_file)").fetchone()[0]
            for name in (cleaned, duplicated))
        con.unregister("run_files")
    return int(lines), int(accepted), int(duplicates), int(rejected)


def lines_per_hour(warehouse: DuckDBWarehouse, keys: set[str]) -> dict[str, int]:
    """Landed lines per hour of ``keys`` (partition keys; an hour with none: 0)."""
    with warehouse.connect() as con:
        if not table_exists(con, DATABASE_SCHEMA, LANDED_LINES.name):
            return dict.fromkeys(keys, 0)
        counts = {partition_key(hour): int(n) for hour, n in con.execute(
            f"SELECT hour, count(*) FROM {DATABASE_SCHEMA}.{LANDED_LINES.name} WHERE hour IS NOT NULL GROUP BY 1"
        ).fetchall()}
    return {key: counts.get(key, 0) for key in keys}


def source_state(source: EventSource) -> dict[str, tuple[int, int]]:
    """Each file the source glob matches now: (size, mtime_ns); a file that vanished is left out."""
    try:
        files = source.files()
    except Failure:  # nothing matches any more: every file vanished
        return {}
    state = {}
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        state[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return state


def changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """The files added, removed or changed (size or mtime) between two :func:`source_state`."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


PLANNED_EVENTS_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def one_planned_event_per_asset() -> Iterator[None]:
    """While a landing run is created: Dagster records one "materialization planned" event per
    asset for the run's range of files instead of one per file and asset (4,000 rows of the
    instance's event log for 2,000 files, about 20 ms each on SQLite). The price, Dagster's: a
    failed landing run does not mark its files' partitions as failed in the UI (the run is
    failed; ``landed_files`` decides what is landed)."""
    before = os.environ.get(PLANNED_EVENTS_ENV)
    os.environ[PLANNED_EVENTS_ENV] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLANNED_EVENTS_ENV, None)
        else:
            os.environ[PLANNED_EVENTS_ENV] = before
