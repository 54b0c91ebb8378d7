"""Asset checks: their specs (name, asset, description, blocking) and how each is evaluated.

The checks run inside the step that materializes the asset, in SQL over that run's slice (the
stored rows of its window), so their cost is proportional to the slice, never to the whole table. A failing ERROR check
marked blocking fails the step, so no downstream asset is materialized from bad data; a WARN
check only flags (the UI shows it yellow) and lists what it found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue


def _spec(asset: str, name: str, description: str, blocking: bool = False) -> AssetCheckSpec:
    return AssetCheckSpec(name=name, asset=asset, description=description, blocking=blocking)


INGEST_CHECKS = [
    _spec("raw_events", "lines_accounted",
          "ERROR, blocking. Every source line whose event time is in the window is either a raw "
          "event or a quarantine row: lines_in_window = raw_events + rejected_events. Failing "
          "means lines were lost or counted twice.", blocking=True),
    _spec("rejected_events", "rejected_share_below_threshold",
          "ERROR, blocking. The share of the window's lines that were quarantined is at most "
          "quality.max_rejected_share (default 5%). Failing means the source is broken (wrong "
          "format, new schema): fix the source or raise the threshold on purpose.", blocking=True),
]
CLEAN_CHECKS = [
    _spec("cleaned_events", "events_accounted",
          "ERROR, blocking. raw_events rows = cleaned_events rows + duplicate_events rows.", blocking=True),
    _spec("cleaned_events", "event_id_unique_not_null",
          "ERROR, blocking. event_id is never NULL and unique within each UTC hour.", blocking=True),
    _spec("cleaned_events", "required_columns_not_null",
          "ERROR, blocking. user_id, time_stamp, url_level1, activity and event_id are never NULL.",
          blocking=True),
    _spec("cleaned_events", "time_stamp_in_partition_window",
          "ERROR, blocking. Every time_stamp lies inside the run's partition window [start, end).",
          blocking=True),
    _spec("cleaned_events", "activity_known",
          "WARN. Every activity is one we know (quality.known_activities); lists new ones."),
    _spec("cleaned_events", "url_level1_expected",
          "WARN. Every url_level1 is an expected domain (quality.expected_domains); lists others "
          "with their event counts (the sample has five foreign domains)."),
    _spec("cleaned_events", "invalid_ip_share",
          "WARN. The share of events with an invalid IP is at most quality.max_invalid_ip_share."),
    _spec("duplicate_events", "no_conflicting_duplicates",
          "WARN. No event_id was seen twice with different payloads (retries are fine)."),
]
HOURLY_CHECKS = [
    _spec("hourly_activity", "reconciles_with_cleaned_events",
          "ERROR, blocking. For every hour, the sum of activity_count equals the number of "
          "cleaned events.", blocking=True),
]


def csv_check_spec(asset: str) -> AssetCheckSpec:
    return _spec(asset, "csv_row_count_matches_table",
                 "ERROR. Each CSV file written holds exactly as many data rows as its table slice "
                 "(read back with a CSV parser, so quoted newlines count once).", blocking=True)


UNPLACED_CHECK = _spec(
    "rejected_without_hour", "no_lines_without_hour",
    "WARN. No source line lacks a usable event time; lists the reasons found.")


def _result(name: str, asset: str, passed: bool, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
            description: str | None = None, **metadata: object) -> AssetCheckResult:
    return AssetCheckResult(check_name=name, asset_key=asset, passed=bool(passed), severity=severity,
                            description=description, metadata=metadata)


def check_lines_accounted(lines_in_window: int, raw_rows: int, rejected_rows: int) -> AssetCheckResult:
    return _result("lines_accounted", "raw_events", lines_in_window == raw_rows + rejected_rows,
                   description=f"{lines_in_window} lines in window = {raw_rows} raw + {rejected_rows} rejected",
                   lines_in_window=lines_in_window, raw_events=raw_rows, rejected_events=rejected_rows)


def _counts_inline_md(counts: Mapping[object, int], limit: int = 5) -> str:
    """``a (3), b (1), ...``: the most frequent values, for a check's one-line description."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    shown = ", ".join(f"{value} ({count})" for value, count in ordered[:limit])
    return shown + (f", and {len(ordered) - limit} more" if len(ordered) > limit else "")


def _counts_md(counts: Mapping[object, int], limit: int = 20) -> str:
    """``- `value`: count`` lines, most frequent first (counts computed in SQL or by Counter)."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[:limit]
    return "\n".join(f"- `{value}`: {count}" for value, count in ordered) or "(none)"


def check_rejected_share(reasons: Mapping[str, int], lines_in_window: int, max_share: float) -> AssetCheckResult:
    """``reasons``: the window's quarantine rows per reason code."""
    rejected = sum(reasons.values())
    share = rejected / lines_in_window if lines_in_window else 0.0
    return _result("rejected_share_below_threshold", "rejected_events", share <= max_share,
                   description=f"{rejected} of {lines_in_window} lines rejected ({share:.2%}; "
                   f"threshold {max_share:.2%})",
                   rejected=rejected, rejected_share=MetadataValue.float(share),
                   threshold=MetadataValue.float(max_share),
                   reasons=MetadataValue.md(_counts_md(reasons)))


def _counts(con, sql: str, params: list | None = None) -> dict[object, int]:
    """``value -> count`` from a SQL query returning (value, count) rows."""
    return {value: int(count) for value, count in con.execute(sql, params or []).fetchall()}


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
    kinds = _counts(con, f"SELECT duplicate_kind, count(*) FROM ({duplicates_sql}) GROUP BY 1")
    duplicate_rows = sum(kinds.values())
    conflicts = _counts(con, f"SELECT event_id, count(*) FROM ({duplicates_sql}) WHERE duplicate_kind = 'conflict' "
                        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20")
    new_activities = _counts(con, f"SELECT activity, count(*) FROM ({cleaned_sql}) "
                             "WHERE activity IS NULL OR NOT list_contains(?, activity) GROUP BY 1",
                             [list(known_activities)])
    foreign = _counts(con, f"SELECT url_level1, count(*) FROM ({cleaned_sql}) "
                      "WHERE url_level1 IS NULL OR NOT list_contains(?, url_level1) GROUP BY 1",
                      [list(expected_domains)])
    outside = written - cleaned_rows  # rows inserted by the run that are not in its window's slice
    invalid_ip_share = invalid_ips / cleaned_rows if cleaned_rows else 0.0
    warn = AssetCheckSeverity.WARN
    return [
        _result("events_accounted", "cleaned_events", raw_rows == cleaned_rows + duplicate_rows,
                description=f"{raw_rows} raw = {cleaned_rows} cleaned + {duplicate_rows} duplicates",
                raw_events=raw_rows, cleaned_events=cleaned_rows, duplicate_events=duplicate_rows),
        _result("event_id_unique_not_null", "cleaned_events",
                id_dupes == 0 and nulls["event_id"] == 0,
                null_event_ids=nulls["event_id"], repeated_event_ids=int(id_dupes)),
        _result("required_columns_not_null", "cleaned_events", not any(nulls.values()),
                **{f"nulls_{c}": int(n) for c, n in nulls.items()}),
        _result("time_stamp_in_partition_window", "cleaned_events", outside == 0,
                description=f"{written} rows written, {cleaned_rows} in the window",
                rows_outside_window=int(outside), window_start=str(start), window_end=str(end)),
        _result("activity_known", "cleaned_events", not new_activities, warn,
                description=f"unknown activities: {_counts_inline_md(new_activities)}" if new_activities else None,
                new_activities=MetadataValue.md(_counts_md(new_activities))),
        _result("url_level1_expected", "cleaned_events", not foreign, warn,
                description=f"{sum(foreign.values())} events on {len(foreign)} other domains: {_counts_inline_md(foreign)}"
                if foreign else "all events on expected domains",
                other_domains=MetadataValue.md(_counts_md(foreign))),
        _result("invalid_ip_share", "cleaned_events", invalid_ip_share <= max_invalid_ip_share, warn,
                description=f"{invalid_ip_share:.2%} of events have an invalid IP "
                f"(threshold {max_invalid_ip_share:.2%})",
                invalid_ip_share=MetadataValue.float(invalid_ip_share)),
        _result("no_conflicting_duplicates", "duplicate_events", not conflicts, warn,
                conflicts=kinds.get("conflict", 0), retries=kinds.get("retry", 0),
                conflicting_event_ids=MetadataValue.md(_counts_md(conflicts))),
    ]


def check_hourly_reconciles(con, hourly_sql: str, cleaned_sql: str) -> AssetCheckResult:
    """``reconciles_with_cleaned_events``, in SQL over the stored hourly slice and the cleaned events."""
    mismatched = [hour for (hour,) in con.execute(f"""
        SELECT coalesce(a.hour, e.hour) FROM
            (SELECT strptime(time_bucket, '%Y%m%d%H') AS hour, sum(activity_count) AS n FROM ({hourly_sql}) GROUP BY 1) a
        FULL JOIN (SELECT date_trunc('hour', time_stamp) AS hour, count(*) AS n FROM ({cleaned_sql}) GROUP BY 1) e
            ON a.hour = e.hour
        WHERE a.n IS DISTINCT FROM e.n ORDER BY 1""").fetchall()]
    total = con.execute(f"SELECT coalesce(sum(activity_count), 0) FROM ({hourly_sql})").fetchone()[0]
    cleaned = con.execute(f"SELECT count(*) FROM ({cleaned_sql})").fetchone()[0]
    return _result("reconciles_with_cleaned_events", "hourly_activity", not mismatched,
                   description=f"sum(activity_count) = {int(total)}, cleaned events = {cleaned}",
                   activity_count_sum=int(total), cleaned_events=int(cleaned),
                   mismatched_hours=MetadataValue.md(_counts_md({str(h): 1 for h in mismatched})))


def check_csv_row_counts(asset: str, expected: dict[str, int], actual: dict[str, int]) -> AssetCheckResult:
    wrong = {path: (expected[path], actual.get(path)) for path in expected if expected[path] != actual.get(path)}
    return _result("csv_row_count_matches_table", asset, not wrong,
                   description=f"{len(expected)} files, {sum(actual.values())} rows",
                   files=len(expected), rows=sum(actual.values()),
                   mismatches=MetadataValue.json({k: list(v) for k, v in wrong.items()}))


def check_no_unplaced(unplaced: pd.DataFrame) -> AssetCheckResult:
    return _result("no_lines_without_hour", "rejected_without_hour", unplaced.empty, AssetCheckSeverity.WARN,
                   description=f"{len(unplaced)} lines have no usable event time",
                   lines=len(unplaced), reasons=MetadataValue.md(_counts_md(unplaced["reason"].value_counts().to_dict())))


SESSION_CHECKS = [
    _spec("user_sessions", "event_count_reconciles",
          "ERROR, blocking. Sessions hold every event of their users and no event twice: for each "
          "session key (user_id and url_level1, or user_id alone when sessions are per user), "
          "sum(event_count) of the run's sessions equals the loaded events of that key between its "
          "first session_start and its last session_end.", blocking=True),
    _spec("user_sessions", "sessions_do_not_overlap",
          "ERROR, blocking. No two sessions of one key overlap in time: each session starts after "
          "the previous one's session_end.", blocking=True),
    _spec("user_sessions", "duration_within_cap",
          "ERROR, blocking. 0 <= duration_seconds <= session_rules.max_session_seconds, "
          "duration_seconds = session_end - session_start, event_count >= 1 and is_bounce = "
          "(event_count = 1).", blocking=True),
    _spec("user_sessions", "lookback_covers_sessions",
          "WARN. No session of the run belongs to a run of activity (gaps <= the inactivity timeout) "
          "that may have begun before the loaded look-back window: such a session may really be "
          "the continuation of an earlier one (a user active without a 30-minute break for over "
          "24 hours, typically a bot). Lists the users."),
]


def _session_key_sql(per_domain: bool) -> str:
    return "user_id || chr(31) || coalesce(url_level1, '')" if per_domain else "user_id"


def session_check_results(con, sessions_sql: str, all_sessions_sql: str, events_sql: str,
                          loaded_window: tuple[datetime, datetime], earliest_event_time: datetime,
                          max_session_seconds: int, inactivity_timeout_seconds: int,
                          per_domain: bool, buckets: int = 1) -> list[AssetCheckResult]:
    """Evaluate ``SESSION_CHECKS`` in SQL.

    Args:
        con: a DuckDB connection on which the three queries run.
        sessions_sql: the run's sessions (those starting in its partition window; stored).
        all_sessions_sql: every session computed from the loaded events (a superset).
        events_sql: the loaded cleaned events (the look-back and look-ahead window).
        loaded_window: [start, end) of the loaded events, naive UTC.
        earliest_event_time: no event can be earlier (the first partition's start): a look-back
            reaching it is complete.
        max_session_seconds, inactivity_timeout_seconds, per_domain: the session rules.
        buckets: evaluate the per-key checks in this many buckets of users (bounded memory).
    """
    warn = AssetCheckSeverity.WARN
    key = _session_key_sql(per_domain)
    totals = con.execute(f"SELECT count(*), coalesce(sum(event_count), 0), coalesce(max(duration_seconds), 0) "
                         f"FROM ({sessions_sql})").fetchone()
    sessions, session_events, longest = (int(v) for v in totals)
    # 1. Events reconcile: per key, events inside [first start, last end] = sum(event_count).
    # 2. Overlaps within a key. Both per bucket of users (a key's rows are in one bucket), so
    #    that the joins and windows hold one bucket at a time.
    keys, unreconciled, overlapping = 0, [], {}
    for bucket in range(buckets):
        mine = f"hash(user_id) % {buckets} = {bucket}"
        spans = f"""SELECT {key} AS key, min(session_start) AS first_start, max(session_end) AS last_end,
                           sum(event_count) AS session_events FROM ({sessions_sql}) WHERE {mine} GROUP BY 1"""
        bucket_keys, bucket_unreconciled = con.execute(f"""
            WITH spans AS ({spans}),
            loaded AS (SELECT s.key, count(*) AS n FROM spans s
                       JOIN (SELECT {key} AS key, time_stamp FROM ({events_sql}) WHERE {mine}) e
                       ON e.key = s.key AND e.time_stamp BETWEEN s.first_start AND s.last_end GROUP BY 1)
            SELECT count(*), list(replace(s.key, chr(31), ' ') ORDER BY s.key) FILTER (WHERE s.session_events <> coalesce(l.n, 0))
            FROM spans s LEFT JOIN loaded l USING (key)""").fetchone()
        keys += bucket_keys
        unreconciled += bucket_unreconciled or []
        for user, count in _counts(con, f"""
                SELECT user_id, count(*) FROM (
                    SELECT user_id, session_start,
                        lag(session_end) OVER (PARTITION BY {key} ORDER BY session_start) AS previous_end
                    FROM ({sessions_sql}) WHERE {mine})
                WHERE previous_end IS NOT NULL AND session_start <= previous_end GROUP BY 1""").items():
            overlapping[user] = overlapping.get(user, 0) + count
    # 3. Durations.
    bad_duration = con.execute(f"""
        SELECT count(*) FROM ({sessions_sql})
        WHERE duration_seconds < 0 OR duration_seconds > ? OR event_count < 1 OR is_bounce <> (event_count = 1)
           OR duration_seconds <> (epoch_us(session_end) - epoch_us(session_start)) // 1000000""",
                               [max_session_seconds]).fetchone()[0]
    # 4. Runs of activity that may have begun before the look-back: group all sessions into runs
    #    (consecutive sessions of a key at most a timeout apart were cut by the cap).
    loaded_start = loaded_window[0]
    suspects: dict[object, int] = {}
    if loaded_start > earliest_event_time:
        suspects = _counts(con, f"""
            WITH early AS (  -- only a key with a session starting this early can have such a run
                SELECT DISTINCT {key} AS key FROM ({all_sessions_sql})
                WHERE session_start <= $loaded_start + to_seconds($timeout)
            ), gaps AS (
                SELECT *, session_start - lag(session_end) OVER (PARTITION BY {key} ORDER BY session_start) AS gap
                FROM ({all_sessions_sql}) WHERE {key} IN (SELECT key FROM early)
            ), chains AS (
                SELECT *, sum(CASE WHEN gap IS NULL OR gap > to_seconds($timeout) THEN 1 ELSE 0 END)
                    OVER (PARTITION BY {key} ORDER BY session_start ROWS UNBOUNDED PRECEDING) AS chain
                FROM gaps
            ), starts AS (
                SELECT *, min(session_start) OVER (PARTITION BY {key}, chain) AS chain_start FROM chains
            )
            SELECT user_id, count(*) FROM starts
            WHERE chain_start <= $loaded_start + to_seconds($timeout)
              AND session_id IN (SELECT session_id FROM ({sessions_sql}))
            GROUP BY 1""", {"timeout": inactivity_timeout_seconds, "loaded_start": loaded_start})
    return [
        _result("event_count_reconciles", "user_sessions", not unreconciled,
                description=f"sum(event_count) = {session_events} over {keys} keys; "
                f"{len(unreconciled)} keys do not reconcile",
                session_events=session_events, keys=int(keys),
                unreconciled_keys=MetadataValue.md(_counts_md({k: 1 for k in unreconciled}))),
        _result("sessions_do_not_overlap", "user_sessions", not overlapping,
                description=f"{sum(overlapping.values())} sessions start before the previous one of their key ends",
                overlapping=sum(overlapping.values()),
                overlapping_users=MetadataValue.md(_counts_md(overlapping))),
        _result("duration_within_cap", "user_sessions", bad_duration == 0,
                description=f"longest session {longest} s (cap {max_session_seconds} s); "
                f"{bad_duration} sessions break the rules",
                max_duration_seconds=longest, cap_seconds=max_session_seconds, violations=int(bad_duration)),
        _result("lookback_covers_sessions", "user_sessions", not suspects, warn,
                description=f"{sum(suspects.values())} sessions may continue activity from before {loaded_start}",
                sessions=sum(suspects.values()), loaded_window_start=str(loaded_start),
                users=MetadataValue.md(_counts_md(suspects))),
    ]
