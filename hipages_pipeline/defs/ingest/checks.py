"""Checks of the ingest stage: every line accounted for, the quarantine share under its threshold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from hipages_pipeline.defs.check_helpers import (
    check_result,
    check_spec,
    counts_md,
    hourly_check_spec,
)
from hipages_pipeline.defs.partitions import partition_key

INGEST_CHECKS = [
    hourly_check_spec("raw_events", "lines_accounted",
          "ERROR, blocking. Every landed line of the hour is either a raw event or a quarantine "
          "row: landed lines = raw_events + rejected_events (per hour). Failing means lines were "
          "lost or counted twice.", blocking=True),
    hourly_check_spec("rejected_events", "rejected_share_below_threshold",
          "ERROR, blocking. In every hour of the window, the share of the hour's lines that were "
          "quarantined is at most quality.max_rejected_share (default 5%); judged per hour, so a "
          "ranged run gives the verdict of its hours run one by one. Failing names the hours: the "
          "source is broken there (wrong format, new schema): fix it or raise the threshold on "
          "purpose.", blocking=True),
    hourly_check_spec("raw_events", "ambiguous_local_times",
          "WARN. No line of the window has a local time that happened twice in the source time "
          "zone (clocks set back at the end of daylight saving time). Such a time is read as the "
          "earlier instant (as Python's zoneinfo does, fold=0); failing lists the count per hour. Never fails for a "
          "UTC source."),
]

UNPLACED_CHECK = check_spec(
    "rejected_without_hour", "no_lines_without_hour",
    "WARN. No source line lacks a usable event time; lists the reasons found.")



def check_lines_accounted(landed: int, raw_rows: int, rejected_rows: int) -> AssetCheckResult:
    """``landed``: the hour's landed lines; ``raw_rows`` / ``rejected_rows``: the hour's stored rows."""
    return check_result("lines_accounted", "raw_events", landed == raw_rows + rejected_rows,
                        description=f"{landed} landed lines = {raw_rows} raw + {rejected_rows} rejected",
                        landed_lines=landed, raw_events=raw_rows, rejected_events=rejected_rows)



def check_rejected_share(lines_per_hour: Mapping[datetime, int], rejects_per_hour: Mapping[datetime, int],
                         reasons: Mapping[str, int], max_share: float) -> AssetCheckResult:
    """Fails when any hour's quarantined share exceeds ``max_share``.

    ``lines_per_hour`` / ``rejects_per_hour``: the window's lines / quarantine rows per UTC hour
    (naive); ``reasons``: the window's quarantine rows per reason code.
    """
    shares = {hour: (rejects_per_hour.get(hour, 0) / lines if lines else 1.0)
              for hour, lines in lines_per_hour.items()}
    shares.update({hour: 1.0 for hour in rejects_per_hour if hour not in lines_per_hour})  # cannot happen
    over = {hour: share for hour, share in sorted(shares.items()) if share > max_share}
    lines, rejected = sum(lines_per_hour.values()), sum(rejects_per_hour.values())
    window_share = rejected / lines if lines else 0.0
    worst = max(shares.values(), default=0.0)
    if over:
        listed = ", ".join(f"{partition_key(hour)} ({rejects_per_hour.get(hour, 0)} of "
                           f"{lines_per_hour.get(hour, 0)}, {share:.2%})" for hour, share in list(over.items())[:10])
        more = f", and {len(over) - 10} more" if len(over) > 10 else ""
        description = (f"{len(over)} of {len(shares)} hour(s) over the threshold of {max_share:.2%}: {listed}{more}; "
                       f"window: {rejected} of {lines} lines rejected ({window_share:.2%})")
    else:
        description = (f"every hour at most {max_share:.2%} rejected (worst {worst:.2%}, {len(shares)} hour(s)); "
                       f"window: {rejected} of {lines} lines rejected ({window_share:.2%})")
    return check_result("rejected_share_below_threshold", "rejected_events", not over, description=description,
                        rejected=rejected, rejected_share=MetadataValue.float(worst),
                        window_rejected_share=MetadataValue.float(window_share),
                        threshold=MetadataValue.float(max_share),
                        hours_over_threshold=MetadataValue.json({partition_key(h): s for h, s in over.items()}),
                        reasons=MetadataValue.md(counts_md(reasons)))



def check_ambiguous_local_times(ambiguous_per_hour: Mapping[datetime, int], source_timezone: str) -> AssetCheckResult:
    """``ambiguous_per_hour``: the window's lines with an ambiguous local time, per UTC hour (naive)."""
    count = sum(ambiguous_per_hour.values())
    hours = {partition_key(hour): int(n) for hour, n in sorted(ambiguous_per_hour.items()) if n}
    listed = ", ".join(f"{key} ({n})" for key, n in hours.items())
    description = (f"{count} line(s) with a local time that happened twice in {source_timezone}, read as the "
                   f"earlier instant: {listed}" if count else
                   f"no ambiguous local time in {source_timezone}")
    return check_result("ambiguous_local_times", "raw_events", count == 0, AssetCheckSeverity.WARN,
                        description=description, ambiguous_lines=count, hours=MetadataValue.json(hours),
                        source_timezone=source_timezone)


def check_no_unplaced(reasons: Mapping[str, int]) -> AssetCheckResult:
    """``reasons``: the lines without a usable event time, per reason code."""
    lines = sum(reasons.values())
    return check_result("no_lines_without_hour", "rejected_without_hour", lines == 0, AssetCheckSeverity.WARN,
                        description=f"{lines} lines have no usable event time",
                        lines=lines, reasons=MetadataValue.md(counts_md(dict(reasons))))
