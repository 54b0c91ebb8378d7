"""Jobs (and the automation that launches them: :mod:`hipages_pipeline.defs.automation.schedules`,
:mod:`hipages_pipeline.defs.automation.sensors`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from dagster import AssetKey, AssetSelection, RunRequest, define_asset_job

from hipages_pipeline.defs.common import GROUP
from hipages_pipeline.defs.partitions import EARLIEST_EVENT_TIME, PARTITION_KEY_FORMAT

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

SESSION_ASSETS = [AssetKey("user_sessions"), AssetKey("user_sessions_csv")]
SESSION_LOOKBACK = timedelta(hours=24)


def session_refresh_request(first: datetime, last: datetime, now: datetime, run_key: str,
                            tags: dict[str, str]) -> RunRequest | None:
    """A run of ``user_sessions`` (and its CSV) over every hour whose sessions new events in
    ``first .. last`` (naive UTC hours) may change.

    A session is stored in the hour it starts and reads cleaned_events up to 24 h ahead, so events
    of hour X can change the sessions of X-24 .. X+1. Queued after the run that materializes
    first .. last, this re-sessionizes first-24 .. last+1 (clipped to hours that have ended by
    ``now`` and to the partitions' start) as one ranged run. None when nothing is left.
    """
    start = max(first - SESSION_LOOKBACK, EARLIEST_EVENT_TIME)
    end = min(last + timedelta(hours=1), now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1))
    if end < start:
        return None
    start_key, end_key = start.strftime(PARTITION_KEY_FORMAT), end.strftime(PARTITION_KEY_FORMAT)
    return RunRequest(
        run_key=f"sessions:{start_key}..{end_key}@{run_key}", asset_selection=SESSION_ASSETS,
        tags={**tags, "dagster/asset_partition_range_start": start_key,
              "dagster/asset_partition_range_end": end_key},
    )
