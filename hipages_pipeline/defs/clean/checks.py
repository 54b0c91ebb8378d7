"""Checks of the clean stage: events accounted for, unique ids, required columns, hourly reconciliation."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from hipages_pipeline.defs.check_helpers import (
    check_result,
    counts_inline_md,
    counts_md,
    hourly_check_spec,
    sql_counts,
)
from hipages_pipeline.defs.partitions import partition_key

CLEAN_CHECKS = [
    hourly_check_spec("cleaned_events", "events_accounted",
          "ERROR, blocking. raw_events rows = cleaned_events rows + duplicate_events rows.", blocking=True),
    hourly_check_spec("cleaned_events", "event_id_unique_not_null",
          "ERROR, blocking. event_id is never NULL and unique within each UTC hour.", blocking=True),
    hourly_check_spec("cleaned_events", "required_columns_not_null",
          "ERROR, blocking. user_id, time_stamp, url_level1, activity and event_id are never NULL.",
          blocking=True),
    hourly_check_spec("cleaned_events", "time_stamp_in_partition_window",
          "ERROR, blocking. Every time_stamp lies inside the run's partition window [start, end).",
          blocking=True),
    hourly_check_spec("cleaned_events", "activity_known",
          "WARN. Every activity is one we know (quality.known_activities); lists new ones."),
    hourly_check_spec("cleaned_events", "url_level1_expected",
          "WARN. Every url_level1 is an expected domain (quality.expected_domains); lists others "
          "with their event counts (the sample has five foreign domains)."),
    hourly_check_spec("cleaned_events", "invalid_ip_share",
          "WARN. The share of events with an invalid IP is at most quality.max_invalid_ip_share."),
    hourly_check_spec("duplicate_events", "no_conflicting_duplicates",
          "WARN. No event_id was seen twice with different payloads (retries are fine)."),
]
HOURLY_CHECKS = [
    hourly_check_spec("hourly_activity", "reconciles_with_cleaned_events",
          "ERROR, blocking. For every hour, the sum of activity_count equals the number of "
          "cleaned events.", blocking=True),
]



def clean_check_results(con, raw_sql: str, cleaned_sql: str, duplicates_sql: str, written: int,
                        window: tuple[datetime, datetime], known_activities: Iterable[str],
                        expected_domains: Iterable[str], max_invalid_ip_share: float) -> list[AssetCheckResult]:
    """Evaluate ``CLEAN_CHECKS`` in SQL on one run's slices (``*_sql``: the raw events read, and
    the stored slices of cleaned_events and duplicate_events); ``written``: the rows the run
    inserted into cleaned_events."""
    start, end = window
    raw_rows = con.execute(f"SELECT count(*) FROM ({raw_sql})").fetchone()[0]
    required = ["user_id", "time_stamp", "url_level1", "activity", "event_id"]
    stats = con.execute(
        "SELECT count(*), " + ", ".join(f"count(*) FILTER (WHERE {c} IS NULL)" for c in required)
        + f", count(*) FILTER (WHERE NOT ip_valid) FROM ({cleaned_sql})").fetchone()
    cleaned_rows, nulls, invalid_ips = stats[0], dict(zip(required, stats[1:6])), stats[6]
    id_dupes = con.execute(f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM ({cleaned_sql}) "
                           "GROUP BY event_id, date_trunc('hour', time_stamp) HAVING count(*) > 1)").fetchone()[0]
    kinds = sql_counts(con, f"SELECT duplicate_kind, count(*) FROM ({duplicates_sql}) GROUP BY 1")
    duplicate_rows = sum(kinds.values())
    conflicts = sql_counts(con, f"SELECT event_id, count(*) FROM ({duplicates_sql}) WHERE duplicate_kind = 'conflict' "
                        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20")
    new_activities = sql_counts(con, f"SELECT activity, count(*) FROM ({cleaned_sql}) "
                             "WHERE activity IS NULL OR NOT list_contains(?, activity) GROUP BY 1",
                             [list(known_activities)])
    foreign = sql_counts(con, f"SELECT url_level1, count(*) FROM ({cleaned_sql}) "
                      "WHERE url_level1 IS NULL OR NOT list_contains(?, url_level1) GROUP BY 1",
                      [list(expected_domains)])
    outside = written - cleaned_rows  # rows inserted by the run that are not in its window's slice
    invalid_ip_share = invalid_ips / cleaned_rows if cleaned_rows else 0.0
    warn = AssetCheckSeverity.WARN
    return [
        check_result("events_accounted", "cleaned_events", raw_rows == cleaned_rows + duplicate_rows,
                description=f"{raw_rows} raw = {cleaned_rows} cleaned + {duplicate_rows} duplicates",
                raw_events=raw_rows, cleaned_events=cleaned_rows, duplicate_events=duplicate_rows),
        check_result("event_id_unique_not_null", "cleaned_events",
                id_dupes == 0 and nulls["event_id"] == 0,
                null_event_ids=nulls["event_id"], repeated_event_ids=int(id_dupes)),
        check_result("required_columns_not_null", "cleaned_events", not any(nulls.values()),
                **{f"nulls_{c}": int(n) for c, n in nulls.items()}),
        check_result("time_stamp_in_partition_window", "cleaned_events", outside == 0,
                description=f"{written} rows written, {cleaned_rows} in the window",
                rows_outside_window=int(outside), window_start=str(start), window_end=str(end)),
        check_result("activity_known", "cleaned_events", not new_activities, warn,
                description=f"unknown activities: {counts_inline_md(new_activities)}" if new_activities else None,
                new_activities=MetadataValue.md(counts_md(new_activities))),
        check_result("url_level1_expected", "cleaned_events", not foreign, warn,
                description=f"{sum(foreign.values())} events on {len(foreign)} other domains: {counts_inline_md(foreign)}"
                if foreign else "all events on expected domains",
                other_domains=MetadataValue.md(counts_md(foreign))),
        check_result("invalid_ip_share", "cleaned_events", invalid_ip_share <= max_invalid_ip_share, warn,
                description=f"{invalid_ip_share:.2%} of events have an invalid IP "
                f"(threshold {max_invalid_ip_share:.2%})",
                invalid_ip_share=MetadataValue.float(invalid_ip_share)),
        check_result("no_conflicting_duplicates", "duplicate_events", not conflicts, warn,
                conflicts=kinds.get("conflict", 0), retries=kinds.get("retry", 0),
                conflicting_event_ids=MetadataValue.md(counts_md(conflicts))),
    ]


def check_hourly_reconciles(con, hourly_sql: str, cleaned_sql: str, hours: list[datetime]) -> dict[str, AssetCheckResult]:
    """``reconciles_with_cleaned_events`` of each of ``hours`` (naive UTC, by partition key), in SQL
    over the stored hourly slice and the cleaned events: sum(activity_count) = events, per hour."""
    sums = {hour: (int(total), int(events)) for hour, total, events in con.execute(f"""
        SELECT coalesce(a.hour, e.hour), coalesce(a.n, 0), coalesce(e.n, 0) FROM
            (SELECT strptime(time_bucket, '%Y%m%d%H') AS hour, sum(activity_count) AS n FROM ({hourly_sql}) GROUP BY 1) a
        FULL JOIN (SELECT date_trunc('hour', time_stamp) AS hour, count(*) AS n FROM ({cleaned_sql}) GROUP BY 1) e
            ON a.hour = e.hour""").fetchall()}
    results = {}
    for hour in hours:
        total, events = sums.get(hour, (0, 0))
        results[partition_key(hour)] = check_result(
            "reconciles_with_cleaned_events", "hourly_activity", total == events,
            description=f"sum(activity_count) = {total}, cleaned events = {events}",
            activity_count_sum=total, cleaned_events=events)
    return results

