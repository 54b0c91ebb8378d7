"""Checks of the ingest stage: every line accounted for, the quarantine share under its threshold."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from hipages_pipeline.defs.check_helpers import (
    check_result,
    check_spec,
    counts_md,
)

INGEST_CHECKS = [
    check_spec("raw_events", "lines_accounted",
          "ERROR, blocking. Every source line whose event time is in the window is either a raw "
          "event or a quarantine row: lines_in_window = raw_events + rejected_events. Failing "
          "means lines were lost or counted twice.", blocking=True),
    check_spec("rejected_events", "rejected_share_below_threshold",
          "ERROR, blocking. The share of the window's lines that were quarantined is at most "
          "quality.max_rejected_share (default 5%). Failing means the source is broken (wrong "
          "format, new schema): fix the source or raise the threshold on purpose.", blocking=True),
]

UNPLACED_CHECK = check_spec(
    "rejected_without_hour", "no_lines_without_hour",
    "WARN. No source line lacks a usable event time; lists the reasons found.")



def check_lines_accounted(lines_in_window: int, raw_rows: int, rejected_rows: int) -> AssetCheckResult:
    return check_result("lines_accounted", "raw_events", lines_in_window == raw_rows + rejected_rows,
                   description=f"{lines_in_window} lines in window = {raw_rows} raw + {rejected_rows} rejected",
                   lines_in_window=lines_in_window, raw_events=raw_rows, rejected_events=rejected_rows)



def check_rejected_share(reasons: Mapping[str, int], lines_in_window: int, max_share: float) -> AssetCheckResult:
    """``reasons``: the window's quarantine rows per reason code."""
    rejected = sum(reasons.values())
    share = rejected / lines_in_window if lines_in_window else 0.0
    return check_result("rejected_share_below_threshold", "rejected_events", share <= max_share,
                   description=f"{rejected} of {lines_in_window} lines rejected ({share:.2%}; "
                   f"threshold {max_share:.2%})",
                   rejected=rejected, rejected_share=MetadataValue.float(share),
                   threshold=MetadataValue.float(max_share),
                   reasons=MetadataValue.md(counts_md(reasons)))



def check_no_unplaced(unplaced: pd.DataFrame) -> AssetCheckResult:
    return check_result("no_lines_without_hour", "rejected_without_hour", unplaced.empty, AssetCheckSeverity.WARN,
                   description=f"{len(unplaced)} lines have no usable event time",
                   lines=len(unplaced), reasons=MetadataValue.md(counts_md(unplaced["reason"].value_counts().to_dict())))

