"""Jobs (and the automation that launches them)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from hipages_pipeline.assets.common import GROUP

hipages_etl_job = define_asset_job(
    "hipages_etl_job",
    selection=AssetSelection.groups(GROUP),
    description="Materialize every asset for an hour or a range of hours (one run per range): "
    "ingest, quarantine, clean, aggregate and export, with all asset checks.",
)
