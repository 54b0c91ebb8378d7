"""Jobs (and the automation that launches them: :mod:`hipages_pipeline.schedules`,
:mod:`hipages_pipeline.sensors`)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from hipages_pipeline.assets.common import GROUP

DUCKDB_WRITER_TAG = "hipages/duckdb-writer"
"""Run tag of every run that writes the DuckDB file. ``dagster_home/dagster.yaml`` allows one run
with this tag at a time (``concurrency.runs.tag_concurrency_limits``): DuckDB allows one writing
process per database file."""

hipages_etl_job = define_asset_job(
    "hipages_etl_job",
    selection=AssetSelection.groups(GROUP),
    description="Materialize every asset for an hour or a range of hours (one run per range): "
    "ingest, quarantine, clean, aggregate and export, with all asset checks.",
    # Job tags are also the tags of its runs (launchpad, job backfills, schedule, sensor).
    tags={DUCKDB_WRITER_TAG: "hipages.duckdb"},
)
