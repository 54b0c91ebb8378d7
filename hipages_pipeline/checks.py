"""Asset checks: their specs (name, asset, description, blocking) and how each is evaluated.

The checks run inside the step that materializes the asset, on the frames of that run's slice,
so their cost is proportional to the slice, never to the whole table. A failing ERROR check
marked blocking fails the step, so no downstream asset is materialized from bad data; a WARN
check only flags (the UI shows it yellow) and lists what it found.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def _counts_inline(series: pd.Series, limit: int = 5) -> str:
    """``a (3), b (1), ...``: the most frequent values, for a check's one-line description."""
    counts = series.value_counts()
    shown = ", ".join(f"{value} ({count})" for value, count in counts.head(limit).items())
    return shown + (f", and {len(counts) - limit} more" if len(counts) > limit else "")


def _counts_table(series: pd.Series, limit: int = 20) -> str:
    counts = series.value_counts(dropna=False).head(limit)
    return "\n".join(f"- `{value}`: {count}" for value, count in counts.items()) or "(none)"


def check_lines_accounted(lines_in_window: int, raw_rows: int, rejected_rows: int) -> AssetCheckResult:
    return _result("lines_accounted", "raw_events", lines_in_window == raw_rows + rejected_rows,
                   description=f"{lines_in_window} lines in window = {raw_rows} raw + {rejected_rows} rejected",
                   lines_in_window=lines_in_window, raw_events=raw_rows, rejected_events=rejected_rows)


def check_rejected_share(rejects: pd.DataFrame, lines_in_window: int, max_share: float) -> AssetCheckResult:
    share = len(rejects) / lines_in_window if lines_in_window else 0.0
    return _result("rejected_share_below_threshold", "rejected_events", share <= max_share,
                   description=f"{len(rejects)} of {lines_in_window} lines rejected ({share:.2%}; "
                   f"threshold {max_share:.2%})",
                   rejected=len(rejects), rejected_share=MetadataValue.float(share),
                   threshold=MetadataValue.float(max_share),
                   reasons=MetadataValue.md(_counts_table(rejects["reason"])))


def clean_check_results(raw: pd.DataFrame, cleaned: pd.DataFrame, duplicates: pd.DataFrame,
                        window: tuple[datetime, datetime], known_activities: Iterable[str],
                        expected_domains: Iterable[str], max_invalid_ip_share: float) -> list[AssetCheckResult]:
    """Evaluate ``CLEAN_CHECKS`` on one run's slice."""
    start, end = window
    hours = cleaned["time_stamp"].dt.floor("h")
    id_dupes = int(cleaned.assign(hour=hours).duplicated(["event_id", "hour"]).sum())
    required = ["user_id", "time_stamp", "url_level1", "activity", "event_id"]
    nulls = {c: int(cleaned[c].isna().sum()) for c in required}
    outside = int(((cleaned["time_stamp"] < start) | (cleaned["time_stamp"] >= end)).sum())
    new_activities = cleaned.loc[~cleaned["activity"].isin(list(known_activities)), "activity"]
    foreign = cleaned.loc[~cleaned["url_level1"].isin(list(expected_domains)), "url_level1"]
    invalid_ip_share = float((~cleaned["ip_valid"]).mean()) if len(cleaned) else 0.0
    conflicts = duplicates[duplicates["duplicate_kind"] == "conflict"]
    warn = AssetCheckSeverity.WARN
    return [
        _result("events_accounted", "cleaned_events", len(raw) == len(cleaned) + len(duplicates),
                description=f"{len(raw)} raw = {len(cleaned)} cleaned + {len(duplicates)} duplicates",
                raw_events=len(raw), cleaned_events=len(cleaned), duplicate_events=len(duplicates)),
        _result("event_id_unique_not_null", "cleaned_events",
                id_dupes == 0 and nulls["event_id"] == 0,
                null_event_ids=nulls["event_id"], repeated_event_ids=id_dupes),
        _result("required_columns_not_null", "cleaned_events", not any(nulls.values()),
                **{f"nulls_{c}": n for c, n in nulls.items()}),
        _result("time_stamp_in_partition_window", "cleaned_events", outside == 0,
                rows_outside_window=outside, window_start=str(start), window_end=str(end)),
        _result("activity_known", "cleaned_events", new_activities.empty, warn,
                description=f"unknown activities: {_counts_inline(new_activities)}" if len(new_activities) else None,
                new_activities=MetadataValue.md(_counts_table(new_activities))),
        _result("url_level1_expected", "cleaned_events", foreign.empty, warn,
                description=f"{len(foreign)} events on {foreign.nunique()} other domains: {_counts_inline(foreign)}"
                if len(foreign) else "all events on expected domains",
                other_domains=MetadataValue.md(_counts_table(foreign))),
        _result("invalid_ip_share", "cleaned_events", invalid_ip_share <= max_invalid_ip_share, warn,
                description=f"{invalid_ip_share:.2%} of events have an invalid IP "
                f"(threshold {max_invalid_ip_share:.2%})",
                invalid_ip_share=MetadataValue.float(invalid_ip_share)),
        _result("no_conflicting_duplicates", "duplicate_events", conflicts.empty, warn,
                conflicts=len(conflicts), retries=int((duplicates["duplicate_kind"] == "retry").sum()),
                conflicting_event_ids=MetadataValue.md(_counts_table(conflicts["event_id"]))),
    ]


def check_hourly_reconciles(hourly: pd.DataFrame, cleaned: pd.DataFrame) -> AssetCheckResult:
    per_hour_aggregate = hourly.groupby("time_bucket")["activity_count"].sum()
    per_hour_aggregate.index = pd.to_datetime(per_hour_aggregate.index, format="%Y%m%d%H")
    per_hour_events = cleaned["time_stamp"].dt.floor("h").value_counts()
    mismatched = per_hour_aggregate.sub(per_hour_events, fill_value=0)
    mismatched = mismatched[mismatched != 0]
    return _result("reconciles_with_cleaned_events", "hourly_activity", mismatched.empty,
                   description=f"sum(activity_count) = {int(hourly['activity_count'].sum())}, "
                   f"cleaned events = {len(cleaned)}",
                   activity_count_sum=int(hourly["activity_count"].sum()), cleaned_events=len(cleaned),
                   mismatched_hours=MetadataValue.md(_counts_table(pd.Series(mismatched.index))))


def check_csv_row_counts(asset: str, expected: dict[str, int], actual: dict[str, int]) -> AssetCheckResult:
    wrong = {path: (expected[path], actual.get(path)) for path in expected if expected[path] != actual.get(path)}
    return _result("csv_row_count_matches_table", asset, not wrong,
                   description=f"{len(expected)} files, {sum(actual.values())} rows",
                   files=len(expected), rows=sum(actual.values()),
                   mismatches=MetadataValue.json({k: list(v) for k, v in wrong.items()}))


def check_no_unplaced(unplaced: pd.DataFrame) -> AssetCheckResult:
    return _result("no_lines_without_hour", "rejected_without_hour", unplaced.empty, AssetCheckSeverity.WARN,
                   description=f"{len(unplaced)} lines have no usable event time",
                   lines=len(unplaced), reasons=MetadataValue.md(_counts_table(unplaced["reason"])))


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


def _session_keys(frame: pd.DataFrame, per_domain: bool) -> pd.Series:
    if per_domain:
        return frame["user_id"].astype(str) + "\x1f" + frame["url_level1"].fillna("").astype(str)
    return frame["user_id"].astype(str)


def session_check_results(sessions: pd.DataFrame, all_sessions: pd.DataFrame, events: pd.DataFrame,
                          loaded_window: tuple[datetime, datetime], earliest_event_time: datetime,
                          max_session_seconds: int, inactivity_timeout_seconds: int,
                          per_domain: bool) -> list[AssetCheckResult]:
    """Evaluate ``SESSION_CHECKS``.

    Args:
        sessions: the run's sessions (those starting in its partition window).
        all_sessions: every session computed from the loaded events (``sessions`` is a subset).
        events: the loaded cleaned events (the look-back and look-ahead window).
        loaded_window: [start, end) of the loaded events, naive UTC.
        earliest_event_time: no event can be earlier (the first partition's start): a look-back
            reaching it is complete.
        max_session_seconds, inactivity_timeout_seconds, per_domain: the session rules.
    """
    warn = AssetCheckSeverity.WARN
    # 1. Events reconcile: per key, events inside [first start, last end] = sum(event_count).
    spans = (sessions.assign(key=_session_keys(sessions, per_domain))
             .groupby("key").agg(first_start=("session_start", "min"), last_end=("session_end", "max"),
                                 session_events=("event_count", "sum")))
    if len(events):
        keyed = events.assign(key=_session_keys(events, per_domain))[["key", "time_stamp"]]
        inside = keyed.merge(spans, left_on="key", right_index=True)
        inside = inside[(inside["time_stamp"] >= inside["first_start"]) & (inside["time_stamp"] <= inside["last_end"])]
        spans["loaded_events"] = inside.groupby("key").size().reindex(spans.index, fill_value=0)
    else:
        spans["loaded_events"] = 0
    unreconciled = spans[spans["session_events"] != spans["loaded_events"]]
    # 2. Overlaps within a key.
    ordered = sessions.assign(key=_session_keys(sessions, per_domain)).sort_values(["key", "session_start"])
    previous_end = ordered.groupby("key")["session_end"].shift()
    overlapping = ordered[previous_end.notna() & (ordered["session_start"] <= previous_end)]
    # 3. Durations.
    measured = (sessions["session_end"] - sessions["session_start"]).dt.total_seconds().astype("int64")
    bad_duration = sessions[(sessions["duration_seconds"] < 0) | (sessions["duration_seconds"] > max_session_seconds)
                            | (sessions["duration_seconds"] != measured) | (sessions["event_count"] < 1)
                            | (sessions["is_bounce"] != (sessions["event_count"] == 1))]
    # 4. Runs of activity that may have begun before the look-back: group all sessions into runs
    #    (consecutive sessions of a key less than a timeout apart were cut by the cap).
    loaded_start = loaded_window[0]
    suspects = pd.Series(dtype="object")
    if len(all_sessions) and loaded_start > earliest_event_time:
        chains = all_sessions.assign(key=_session_keys(all_sessions, per_domain)).sort_values(["key", "session_start"])
        gap = chains["session_start"] - chains.groupby("key")["session_end"].shift()
        chain_number = (gap.isna() | (gap > pd.Timedelta(seconds=inactivity_timeout_seconds))).cumsum()
        chain_start = chains.groupby(chain_number)["session_start"].transform("min")
        truncated = chains[chain_start <= loaded_start + pd.Timedelta(seconds=inactivity_timeout_seconds)]
        suspects = truncated.loc[truncated["session_id"].isin(sessions["session_id"]), "user_id"]
    return [
        _result("event_count_reconciles", "user_sessions", unreconciled.empty,
                description=f"sum(event_count) = {int(sessions['event_count'].sum())} over {len(spans)} keys; "
                f"{len(unreconciled)} keys do not reconcile",
                session_events=int(sessions["event_count"].sum()), keys=len(spans),
                unreconciled_keys=MetadataValue.md(_counts_table(
                    pd.Series([str(key).replace("\x1f", " ") for key in unreconciled.index], dtype="object")))),
        _result("sessions_do_not_overlap", "user_sessions", overlapping.empty,
                description=f"{len(overlapping)} sessions start before the previous one of their key ends",
                overlapping=len(overlapping),
                overlapping_users=MetadataValue.md(_counts_table(overlapping["user_id"]))),
        _result("duration_within_cap", "user_sessions", bad_duration.empty,
                description=f"longest session {int(sessions['duration_seconds'].max()) if len(sessions) else 0} s "
                f"(cap {max_session_seconds} s); {len(bad_duration)} sessions break the rules",
                max_duration_seconds=int(sessions["duration_seconds"].max()) if len(sessions) else 0,
                cap_seconds=max_session_seconds, violations=len(bad_duration)),
        _result("lookback_covers_sessions", "user_sessions", suspects.empty, warn,
                description=f"{len(suspects)} sessions may continue activity from before {loaded_start}",
                sessions=len(suspects), loaded_window_start=str(loaded_start),
                users=MetadataValue.md(_counts_table(suspects))),
    ]
