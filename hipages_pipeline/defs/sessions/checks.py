"""Checks of the sessions stage: events reconcile, no overlaps, durations within the cap, look-back."""

from __future__ import annotations

from datetime import datetime

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from hipages_pipeline.defs.check_helpers import (
    check_result,
    counts_md,
    hourly_check_spec,
    sql_counts,
)

SESSION_CHECKS = [
    hourly_check_spec("user_sessions", "event_count_reconciles",
          "ERROR, blocking. Sessions hold every event of their users and no event twice: for each "
          "session key (user_id and url_level1, or user_id alone when sessions are per user), "
          "sum(event_count) of the run's sessions equals the loaded events of that key between its "
          "first session_start and its last session_end.", blocking=True),
    hourly_check_spec("user_sessions", "sessions_do_not_overlap",
          "ERROR, blocking. No two sessions of one key overlap in time: each session starts after "
          "the previous one's session_end.", blocking=True),
    hourly_check_spec("user_sessions", "duration_within_cap",
          "ERROR, blocking. 0 <= duration_seconds <= session_rules.max_session_seconds, "
          "duration_seconds = session_end - session_start, event_count >= 1 and is_bounce = "
          "(event_count = 1).", blocking=True),
    hourly_check_spec("user_sessions", "lookback_covers_sessions",
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
    key = _session_key_sql(per_domain)
    session_events, longest = _totals(con, sessions_sql)
    keys, unreconciled, overlapping = _per_key_checks(con, key, sessions_sql, events_sql, buckets)
    bad_duration = _bad_durations(con, sessions_sql, max_session_seconds)
    loaded_start = loaded_window[0]
    suspects: dict[object, int] = {}
    if loaded_start > earliest_event_time:
        suspects = _lookback_suspects(con, key, sessions_sql, all_sessions_sql, loaded_start,
                                      inactivity_timeout_seconds)
    return [
        _reconciles_result(session_events, keys, unreconciled),
        _overlap_result(overlapping),
        _duration_result(longest, max_session_seconds, bad_duration),
        _lookback_result(suspects, loaded_start),
    ]


def _totals(con, sessions_sql: str) -> tuple[int, int]:
    """sum(event_count) and max(duration_seconds) of the run's sessions (0 when there are none)."""
    totals = con.execute(f"SELECT count(*), coalesce(sum(event_count), 0), coalesce(max(duration_seconds), 0) "
                         f"FROM ({sessions_sql})").fetchone()
    _sessions, session_events, longest = (int(v) for v in totals)
    return session_events, longest


def _per_key_checks(con, key: str, sessions_sql: str, events_sql: str,
                    buckets: int) -> tuple[int, list[str], dict[object, int]]:
    """Checks 1 (events reconcile) and 2 (overlaps) per bucket of users (a key's rows are in one
    bucket), so that the joins and windows hold one bucket at a time: (keys, the unreconciled keys,
    overlapping sessions per user)."""
    keys, unreconciled, overlapping = 0, [], {}
    for bucket in range(buckets):
        mine = f"hash(user_id) % {buckets} = {bucket}"
        bucket_keys, bucket_unreconciled = _reconcile_bucket(con, key, sessions_sql, events_sql, mine)
        keys += bucket_keys
        unreconciled += bucket_unreconciled or []
        for user, count in _overlaps_in_bucket(con, key, sessions_sql, mine).items():
            overlapping[user] = overlapping.get(user, 0) + count
    return keys, unreconciled, overlapping


def _reconcile_bucket(con, key: str, sessions_sql: str, events_sql: str, mine: str) -> tuple:
    """Per key of the bucket ``mine``: loaded events inside [first start, last end] = sum(event_count).
    Returns (keys, the keys that do not reconcile or None)."""
    spans = f"""SELECT {key} AS key, min(session_start) AS first_start, max(session_end) AS last_end,
                           sum(event_count) AS session_events FROM ({sessions_sql}) WHERE {mine} GROUP BY 1"""
    return con.execute(f"""
            WITH spans AS ({spans}),
            loaded AS (SELECT s.key, count(*) AS n FROM spans s
                       JOIN (SELECT {key} AS key, time_stamp FROM ({events_sql}) WHERE {mine}) e
                       ON e.key = s.key AND e.time_stamp BETWEEN s.first_start AND s.last_end GROUP BY 1)
            SELECT count(*), list(replace(s.key, chr(31), ' ') ORDER BY s.key) FILTER (WHERE s.session_events <> coalesce(l.n, 0))
            FROM spans s LEFT JOIN loaded l USING (key)""").fetchone()


def _overlaps_in_bucket(con, key: str, sessions_sql: str, mine: str) -> dict[object, int]:
    """user_id -> sessions of the bucket ``mine`` that start before the previous one of their key ends."""
    return sql_counts(con, f"""
                SELECT user_id, count(*) FROM (
                    SELECT user_id, session_start,
                        lag(session_end) OVER (PARTITION BY {key} ORDER BY session_start) AS previous_end
                    FROM ({sessions_sql}) WHERE {mine})
                WHERE previous_end IS NOT NULL AND session_start <= previous_end GROUP BY 1""")


def _bad_durations(con, sessions_sql: str, max_session_seconds: int) -> int:
    """Check 3: sessions whose duration, event_count or is_bounce break the rules."""
    return con.execute(f"""
        SELECT count(*) FROM ({sessions_sql})
        WHERE duration_seconds < 0 OR duration_seconds > ? OR event_count < 1 OR is_bounce <> (event_count = 1)
           OR duration_seconds <> (epoch_us(session_end) - epoch_us(session_start)) // 1000000""",
                       [max_session_seconds]).fetchone()[0]


def _lookback_suspects(con, key: str, sessions_sql: str, all_sessions_sql: str, loaded_start: datetime,
                       inactivity_timeout_seconds: int) -> dict[object, int]:
    """Check 4: user_id -> the run's sessions in a run of activity that may have begun before the
    look-back. All sessions are grouped into runs (consecutive sessions of a key at most a timeout
    apart were cut by the cap)."""
    return sql_counts(con, f"""
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


def _reconciles_result(session_events: int, keys: int, unreconciled: list[str]) -> AssetCheckResult:
    return check_result("event_count_reconciles", "user_sessions", not unreconciled,
                        description=f"sum(event_count) = {session_events} over {keys} keys; "
                        f"{len(unreconciled)} keys do not reconcile",
                        session_events=session_events, keys=int(keys),
                        unreconciled_keys=MetadataValue.md(counts_md({k: 1 for k in unreconciled})))


def _overlap_result(overlapping: dict[object, int]) -> AssetCheckResult:
    return check_result("sessions_do_not_overlap", "user_sessions", not overlapping,
                        description=f"{sum(overlapping.values())} sessions start before the previous one of "
                        "their key ends",
                        overlapping=sum(overlapping.values()),
                        overlapping_users=MetadataValue.md(counts_md(overlapping)))


def _duration_result(longest: int, max_session_seconds: int, bad_duration: int) -> AssetCheckResult:
    return check_result("duration_within_cap", "user_sessions", bad_duration == 0,
                        description=f"longest session {longest} s (cap {max_session_seconds} s); "
                        f"{bad_duration} sessions break the rules",
                        max_duration_seconds=longest, cap_seconds=max_session_seconds, violations=int(bad_duration))


def _lookback_result(suspects: dict[object, int], loaded_start: datetime) -> AssetCheckResult:
    return check_result("lookback_covers_sessions", "user_sessions", not suspects, AssetCheckSeverity.WARN,
                        description=f"{sum(suspects.values())} sessions may continue activity from before "
                        f"{loaded_start}",
                        sessions=sum(suspects.values()), loaded_window_start=str(loaded_start),
                        users=MetadataValue.md(counts_md(suspects)))
