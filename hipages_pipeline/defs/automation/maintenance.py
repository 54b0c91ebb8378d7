"""Table maintenance: ``hipages_lake_maintenance_job`` and its daily schedule.

On the ``delta`` storage every hourly run adds small files to each table (one commit per output).
The job, per Delta table:

1. **compacts** small files into larger ones (``optimize.compact``; a new version, same rows);
2. **vacuums** (full: the whole folder is listed) the files that no version of the last
   ``HIPAGES_LAKE_VACUUM_HOURS`` (default 168, one week) needs, and the leftovers of killed
   writers (files never committed) older than that;
3. writes a **checkpoint**, so that opening the table reads one file instead of every commit.

A compaction that meets a concurrent write of the same files fails one of the two commits
(``CommitFailedError``, nothing half-done): hence the quiet hour (04:30 UTC) of the schedule; a
reader older than the vacuum window may find files gone. On the DuckDB storage it runs DuckDB's
``CHECKPOINT`` (the WAL into the file).

The schedule is on when ``HIPAGES_AUTOMATION`` turns schedules on (see
:mod:`hipages_pipeline.defs.automation.schedules`).
"""

from __future__ import annotations

import os

from dagster import DefaultScheduleStatus, Failure, ScheduleDefinition, job, op
from deltalake.exceptions import CommitFailedError

from hipages_pipeline.defs.automation.schedules import automation_enabled
from hipages_pipeline.defs.lake_tables import lake_columns
from hipages_pipeline.defs.warehouse import DuckDBWarehouse

VACUUM_ENV = "HIPAGES_LAKE_VACUUM_HOURS"
DEFAULT_VACUUM_HOURS = 168


def vacuum_hours() -> int:
    """Hours of history that vacuum keeps (``HIPAGES_LAKE_VACUUM_HOURS``, default 168).

    Raises:
        ValueError: not a whole number of hours >= 1.
    """
    text = os.environ.get(VACUUM_ENV) or str(DEFAULT_VACUUM_HOURS)
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{VACUUM_ENV} must be a whole number of hours >= 1, got {text!r}")
    return int(text)


@op(description="Compact, vacuum and checkpoint every Delta table (DuckDB storage: CHECKPOINT).")
def maintain_tables(context, warehouse: DuckDBWarehouse) -> None:
    """Per table: files compacted (removed -> added), files vacuumed, and the new version.

    Raises:
        dagster.Failure: a table met a concurrent write (the others are still maintained).
    """
    lake = warehouse.lake()
    if lake is None:
        with warehouse.connect() as con:
            con.execute("CHECKPOINT")
        context.log.info(f"DuckDB storage: checkpointed {warehouse.database}")
        return
    keep, failed = vacuum_hours(), []
    for name in lake_columns():
        table = lake.table(name)
        if table is None:
            continue
        try:
            compacted = table.optimize.compact()
            vacuumed = table.vacuum(retention_hours=keep, dry_run=False, enforce_retention_duration=False, full=True)
            table.create_checkpoint()
        except CommitFailedError as exc:  # a run wrote the same files meanwhile: the next tables go on
            failed.append(name)
            context.log.warning(f"{name}: not maintained, a concurrent commit: {str(exc).splitlines()[0]}")
            continue
        context.log.info(f"{name}: {compacted.get('numFilesRemoved', 0)} files compacted into "
                         f"{compacted.get('numFilesAdded', 0)}, {len(vacuumed)} vacuumed, version {table.version()}")
    if failed:
        raise Failure(description=f"not maintained (a run wrote them meanwhile; the next run of the job "
                      f"tries again): {', '.join(failed)}")
    context.log.info(f"maintained the Delta tables under {lake.uri} (vacuum keeps {keep} h)")


@job(description="Table maintenance: compact small files, vacuum old ones, checkpoint (see the schedule).",
     tags={"hipages/duckdb-writer": "hipages.duckdb"})  # one writer with the landing runs (DuckDB: the file)
def hipages_lake_maintenance_job():
    maintain_tables()


hipages_lake_maintenance_schedule = ScheduleDefinition(
    name="hipages_lake_maintenance_schedule",
    job=hipages_lake_maintenance_job,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING if automation_enabled("schedule") else DefaultScheduleStatus.STOPPED,
    description="Daily at 04:30 UTC: hipages_lake_maintenance_job.",
)
