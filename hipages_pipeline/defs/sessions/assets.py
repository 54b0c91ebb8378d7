"""Sessions: ``cleaned_events`` (with 24 hours either side) -> ``user_sessions``, one row per
session, partitioned by the UTC hour in which the session starts (its CSV files are an export,
:mod:`hipages_pipeline.defs.exports.assets`)."""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetIn,
    Failure,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
)

from hipages_pipeline.defs.check_helpers import per_hour
from hipages_pipeline.defs.common import hourly_table_asset
from hipages_pipeline.defs.io_manager import DuckDBQuery
from hipages_pipeline.defs.partitions import (
    naive_utc_window,
)
from hipages_pipeline.defs.resources import DuckDBWarehouse, SessionRules
from hipages_pipeline.defs.sessions.checks import SESSION_CHECKS, session_check_results
from hipages_pipeline.lib.contract import EARLIEST_EVENT_TIME, USER_SESSIONS
from hipages_pipeline.lib.sql.sessions import SessionSettings, session_params, sessions_sql

LOOKBACK_HOURS = 24
"""Hours of cleaned_events loaded before the run's window, to find where its sessions began."""
LOOKAHEAD_HOURS = 24
"""Hours of cleaned_events loaded after the run's window: a session lasts at most 24 hours, so
every event of a session that starts in the window is loaded."""

SESSION_BUCKET_EVENTS = 1_000_000
"""Events sessionized per query at most (about): more loaded events are split by user."""

AROUND_THE_WINDOW = TimeWindowPartitionMapping(
    start_offset=-LOOKBACK_HOURS, end_offset=LOOKAHEAD_HOURS,
    # The first partition has no look-back and the last ones (up to now) no look-ahead: load
    # what exists (there can be no event before the first partition, and none in the future).
    allow_nonexistent_upstream_partitions=True,
)


SESSION_NOTES = """
**Rules** (resource ``session_rules``): a session is one user's run of events on one domain
(``per_domain``, default; else one user's on any domain) with no gap over 30 minutes
(``inactivity_timeout_seconds`` = 1800; exactly 30 minutes is the same session), cut at 24 hours
(``max_session_seconds`` = 86400: the first event more than 24 h after the session's start
starts a new one). Events at the same instant are ordered by event_id.

**Hour boundaries**: the step loads ``cleaned_events`` from 24 hours before the run's window to
24 hours after it (``TimeWindowPartitionMapping(-24, +24)``), sessionizes all of it, and keeps
the sessions that *start* in the window. A session from 20:50 to 21:10 is stored whole in the
20:00 partition, and the 21:00 partition, which sees the 20:50 event in its look-back, does not
start a second session for the continuation. Single hours and ranges give the same rows.

**Correctness boundary**: the rows of hour H are exact when, at the time H is materialized,
(1) ``cleaned_events`` of every hour from H-24 to H+24 is up to date: events that land later
in those hours (late files, a next hour not yet materialized) are only seen when H is
re-materialized, so after hour X changes, re-materialize user_sessions for X-24 .. X+1; and
(2) no user was active without a 30-minute break from more than 24 hours before H into H
(the look-back cannot see where such a run began; the WARN check
``lookback_covers_sessions`` lists them).

**Computation**: in DuckDB, users in hash buckets of about ``SESSION_BUCKET_EVENTS`` loaded
events (a user's events are never split), into a staging table dropped after the step; the
checks run per bucket too, so memory does not grow with the window.
"""
"""The asset description's notes after the contract's columns."""


@hourly_table_asset(USER_SESSIONS, SESSION_NOTES, SESSION_CHECKS,
                    ins={"cleaned_events": AssetIn("cleaned_events", partition_mapping=AROUND_THE_WINDOW)})
def user_sessions(context: AssetExecutionContext, cleaned_events: DuckDBQuery, session_rules: SessionRules,
                  warehouse: DuckDBWarehouse) -> Iterator:
    """Sessionize the loaded window (the run's hours +- 24) into a staging table, store the sessions
    that start in the run's window and run the checks (see ``SESSION_NOTES``).

    Raises:
        dagster.Failure: the session rules are invalid, or max_session_seconds exceeds the
            24-hour look-ahead.
    """
    rules = session_rules.settings()
    if rules.max_session_seconds > LOOKAHEAD_HOURS * 3600:
        raise Failure(description=f"session_rules.max_session_seconds = {rules.max_session_seconds} exceeds "
                      f"the asset's look-ahead of {LOOKAHEAD_HOURS} hours: sessions would be cut short")
    window = naive_utc_window(context.partition_time_window)
    loaded = naive_utc_window(context.asset_partitions_time_window_for_input("cleaned_events"))
    with warehouse.connect() as con, warehouse.staging_table(con, "user_sessions") as all_sessions:
        # Every session of the loaded events, in a staging table (the IO manager's connection
        # reads it; the checks too), then the ones that start in the window are stored.
        loaded_events, buckets = _sessionize(con, cleaned_events.sql, all_sessions, rules)
        starting = f"SELECT * FROM {all_sessions} WHERE session_start >= $start AND session_start < $end"
        params = {"start": window[0], "end": window[1]}
        stats = _stats(con, starting, all_sessions, params)
        context.log.info(f"{loaded_events} events loaded from {loaded[0]} to {loaded[1]} ({buckets} bucket(s) "
                         f"of users) -> {stats[4]} sessions, those starting in {window[0]} .. {window[1]} stored")
        yield Output(DuckDBQuery(starting, params=params), metadata={
            "users": int(stats[0]),
            "bounces": int(stats[1]),
            "converted": int(stats[2]),
            "ending_after_window": MetadataValue.int(int(stats[3])),
            "loaded_window": f"{loaded[0]} .. {loaded[1]}",
            "loaded_events": int(loaded_events),
            "user_buckets": buckets,
        })
        yield from per_hour(context, session_check_results(
            con, warehouse.slice_sql("user_sessions", "session_start", window), f"SELECT * FROM {all_sessions}",
            cleaned_events.sql, loaded, EARLIEST_EVENT_TIME,
            rules.max_session_seconds, rules.inactivity_timeout_seconds, rules.per_domain, buckets,
        ))


def _sessionize(con, events_sql: str, all_sessions: str, rules: SessionSettings) -> tuple[int, int]:
    """Create table ``all_sessions`` with every session of the events of ``events_sql``.

    A user's events are never split: the users are sessionized in buckets (by a hash of user_id)
    of about ``SESSION_BUCKET_EVENTS`` events each, so the window functions' memory stays bounded.
    Returns (loaded events, buckets).
    """
    loaded_events = con.execute(f"SELECT count(*) FROM ({events_sql})").fetchone()[0]
    buckets = max(1, -(-loaded_events // SESSION_BUCKET_EVENTS))
    for bucket in range(buckets):
        events = f"SELECT * FROM ({events_sql}) WHERE hash(user_id) % {buckets} = {bucket}"
        into = f"CREATE TABLE {all_sessions} AS" if bucket == 0 else f"INSERT INTO {all_sessions}"
        con.execute(f"{into} {sessions_sql(events)}", session_params(rules))
    return loaded_events, buckets


def _stats(con, starting: str, all_sessions: str, params: dict) -> tuple:
    """Of the sessions ``starting`` in the window: (users, bounces, converted, ending after the
    window's end, and every session of ``all_sessions``)."""
    return con.execute(f"SELECT count(DISTINCT user_id), count(*) FILTER (WHERE is_bounce), "
                       f"count(*) FILTER (WHERE converted), count(*) FILTER (WHERE session_end >= $end), "
                       f"(SELECT count(*) FROM {all_sessions}) FROM ({starting})", params).fetchone()
