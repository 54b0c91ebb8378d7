"""The job that every schedule, sensor and backfill launches (the automation that launches it:
:mod:`hipages_pipeline.defs.automation.schedules`, :mod:`hipages_pipeline.defs.automation.sensors`)."""

from __future__ import annotations

import os
from datetime import timedelta

from dagster import AssetKey, AssetSelection, define_asset_job

from hipages_pipeline.defs.common import GROUP
from hipages_pipeline.defs.partitions import source_file_partitions

DUCKDB_WRITER_TAG = "hipages/duckdb-writer"
"""Run tag of the runs that must not run beside each other. ``dagster_home/dagster.yaml`` allows
one run with this tag at a time (``concurrency.runs.tag_concurrency_limits``). On the DuckDB
storage every run carries it (one writing process per database file); on ``delta``
(``HIPAGES_STORAGE=delta``) only landing runs do (each rewrites ``rejected_without_hour`` whole),
and hourly runs of disjoint hours run side by side."""


def _on_delta() -> bool:
    return (os.environ.get("HIPAGES_STORAGE") or "duckdb").strip().lower() == "delta"

LANDING_ASSETS = [AssetKey("landed_lines"), AssetKey("landed_files"), AssetKey("rejected_without_hour")]
"""What a landing run materializes: the files' lines and accounting, then the lines without an hour."""

hipages_landing_job = define_asset_job(
    "hipages_landing_job",
    selection=AssetSelection.assets(*LANDING_ASSETS),
    partitions_def=source_file_partitions,
    description="Land source files (one partition per file, a range of files per run): read each "
    "once, store every line in landed_lines and each file's accounting in landed_files, and "
    "rebuild rejected_without_hour.",
    tags={DUCKDB_WRITER_TAG: "hipages.duckdb"},
)

hipages_etl_job = define_asset_job(
    "hipages_etl_job",
    selection=AssetSelection.groups(GROUP) - AssetSelection.assets(*LANDING_ASSETS),
    description="Materialize every hourly asset for an hour or a range of hours (one run per range) "
    "from the landed lines: ingest, quarantine, clean, aggregate and export, with all asset checks.",
    # Job tags are also the tags of its runs (launchpad, job backfills, schedule, sensors).
    tags={} if _on_delta() else {DUCKDB_WRITER_TAG: "hipages.duckdb"},
)

SESSION_ASSETS = [AssetKey("user_sessions"), AssetKey("user_sessions_csv"), AssetKey("whole_user_sessions_csv")]
"""What the sessions refresh re-runs (``hipages_sessions_refresh_sensor``): the table, its hour
files and the whole file, so that the three agree."""
SESSION_LOOKBACK = timedelta(hours=24)
"""How far back new events of an hour can change sessions (a session lasts at most 24 hours)."""
