"""Sessions: cleaned events -> one row per session, in DuckDB SQL (window functions, no per-event loop).

The receiver's ``session_id`` differs on every event, so sessions are derived from each user's
activity, as web analytics tools do:

1. **Key.** A session belongs to one user on one site: the key is ``(user_id, url_level1)`` when
   ``per_domain`` is True (the default), else ``user_id`` alone (then ``url_level1`` is the domain of
   the session's first event, and a session may hold events of several domains).
2. **Inactivity.** A key's events are ordered by ``(time_stamp, event_id)``; an event more than
   ``inactivity_timeout_seconds`` (default 1800) after the previous one starts a new run of activity
   (a *chain*). Exactly the timeout apart is still the same chain; events at the same instant are
   always in the same session.
3. **Cap.** A session lasts at most ``max_session_seconds`` (default 86400): the first event of a
   chain starts a session; the first event *more than* the cap after that session's start starts the
   next one, and so on. Exactly the cap after the start is still the same session, so
   ``0 <= duration_seconds <= max_session_seconds``.

A chain within the cap is one session (one aggregate, no join). Only chains longer than the cap
are cut, with a recursive CTE whose every step advances all long chains at once (a join finds each
chain's next cut), so the number of steps is the largest number of cap-cut pieces in one chain,
not the number of events.

The result depends only on the events given: the same events give the same sessions and the same
``session_id`` (in any row order). Computing the sessions of a time window exactly needs every
event of the keys' chains that reach into the window (see ``hipages_pipeline.defs.sessions.assets``
for how the asset loads them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from hipages_pipeline.lib.contract import KNOWN_ACTIVITIES, USER_SESSIONS
from hipages_pipeline.lib.events.validation import new_connection

SESSION_ACTIVITIES = KNOWN_ACTIVITIES
"""Activities counted in their own column (``<activity>_count``); any other is ``other_count``."""

SESSION_COLUMNS = USER_SESSIONS.column_names
SESSION_EVENT_COLUMNS = ["event_id", "user_id", "time_stamp", "url_level1", "url_level2", "activity"]
"""The columns of the events :func:`sessionize` reads (``cleaned_events`` has them all)."""


@dataclass(frozen=True)
class SessionSettings:
    """The sessionization rules.

    inactivity_timeout_seconds: a gap longer than this (seconds) starts a new session.
    max_session_seconds: a session lasts at most this long (seconds) from its first event.
    per_domain: sessions per (user_id, url_level1) when True, per user_id when False.

    Raises:
        ValueError: a duration is not a positive whole number of seconds.
    """

    inactivity_timeout_seconds: int = 1800
    max_session_seconds: int = 86400
    per_domain: bool = True

    def __post_init__(self) -> None:
        for name in ("inactivity_timeout_seconds", "max_session_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number of seconds, got {value!r}")


def session_id_of(user_id: str, url_level1: str | None, session_start: datetime, per_domain: bool = True) -> str:
    """The ``session_id`` :func:`sessionize` gives (for documentation and tests).

    It is the MD5 (32 lower-case hex digits) of ``user_id|domain|start``: ``domain`` is url_level1
    when sessions are per domain, else empty; ``start`` is session_start in UTC as
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. A key's sessions never share a start, so ids are unique.
    """
    domain = (url_level1 or "") if per_domain else ""
    text = f"{user_id}|{domain}|{session_start.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    return hashlib.md5(text.encode("utf-8")).hexdigest()


_COUNTS = ",\n        ".join(
    f"count(*) FILTER (WHERE activity = '{activity}')::BIGINT AS {activity}_count" for activity in SESSION_ACTIVITIES
)
_KNOWN = ", ".join(f"'{activity}'" for activity in SESSION_ACTIVITIES)

_SESSIONIZE_TEMPLATE = f"""
WITH RECURSIVE keyed AS (
    SELECT CAST(event_id AS VARCHAR) AS event_id, CAST(user_id AS VARCHAR) AS user_id,
           CAST(time_stamp AS TIMESTAMP) AS time_stamp, CAST(url_level1 AS VARCHAR) AS url_level1,
           CAST(url_level2 AS VARCHAR) AS url_level2, CAST(activity AS VARCHAR) AS activity,
           CASE WHEN $per_domain THEN coalesce(CAST(url_level1 AS VARCHAR), '') ELSE '' END AS domain_key
    FROM ({{events_sql}}) AS events  -- typed, so that a column holding only NULLs is still text
),
gaps AS (
    SELECT *, time_stamp - lag(time_stamp) OVER by_key AS gap
    FROM keyed
    WINDOW by_key AS (PARTITION BY user_id, domain_key ORDER BY time_stamp, event_id)
),
chains AS (
    SELECT *, sum(CASE WHEN gap IS NULL OR gap > to_seconds($timeout) THEN 1 ELSE 0 END) OVER (
               PARTITION BY user_id, domain_key ORDER BY time_stamp, event_id ROWS UNBOUNDED PRECEDING
           ) AS chain_number
    FROM gaps
),
chain_spans AS (
    SELECT user_id, domain_key, chain_number, min(time_stamp) AS chain_start, max(time_stamp) AS chain_end
    FROM chains GROUP BY ALL
),
long_chains AS (  -- only chains longer than the cap need cutting
    SELECT * FROM chain_spans WHERE chain_end - chain_start > to_seconds($cap)
),
long_chain_events AS (
    SELECT c.* FROM chains c SEMI JOIN long_chains USING (user_id, domain_key, chain_number)
),
cuts(user_id, domain_key, chain_number, session_start) AS (
    SELECT user_id, domain_key, chain_number, chain_start FROM long_chains
    UNION ALL
    SELECT cut.user_id, cut.domain_key, cut.chain_number, min(e.time_stamp)
    FROM cuts cut JOIN long_chain_events e
      ON e.user_id = cut.user_id AND e.domain_key = cut.domain_key AND e.chain_number = cut.chain_number
     AND e.time_stamp > cut.session_start + to_seconds($cap)
     -- gaps in a chain are <= the timeout, so the next cut lies within one timeout past the cap
     AND e.time_stamp <= cut.session_start + to_seconds($cap) + to_seconds($timeout)
    GROUP BY ALL
),
assigned AS (  -- a chain within the cap is one session; a longer one is cut at its cuts
    SELECT c.*, NULL::TIMESTAMP AS cut_start
    FROM chains c ANTI JOIN long_chains USING (user_id, domain_key, chain_number)
    UNION ALL
    SELECT e.*, cut.session_start AS cut_start
    FROM long_chain_events e ASOF JOIN cuts cut
      ON e.user_id = cut.user_id AND e.domain_key = cut.domain_key AND e.chain_number = cut.chain_number
     AND e.time_stamp >= cut.session_start
),
sessions AS (  -- first/last by (time_stamp, event_id): arg_min_null/arg_max_null keep NULL values
    SELECT user_id, domain_key, coalesce(cut_start, min(time_stamp)) AS session_start,
        arg_min_null(url_level1, (time_stamp, event_id)) AS url_level1,
        max(time_stamp) AS session_end,
        count(*)::BIGINT AS event_count,
        {_COUNTS},
        count(*) FILTER (WHERE activity IS NULL OR activity NOT IN ({_KNOWN}))::BIGINT AS other_count,
        arg_min_null(url_level2, (time_stamp, event_id)) AS landing_url_level2,
        arg_max_null(url_level2, (time_stamp, event_id)) AS exit_url_level2,
        count(*) FILTER (WHERE activity = 'claim') > 0 AS converted
    FROM assigned
    GROUP BY user_id, domain_key, chain_number, cut_start
)
SELECT
    md5(concat_ws('|', user_id, domain_key, strftime(session_start, '%Y-%m-%dT%H:%M:%S.%fZ'))) AS session_id,
    user_id, url_level1, session_start, session_end,
    ((epoch_us(session_end) - epoch_us(session_start)) // 1000000)::BIGINT AS duration_seconds,
    event_count, {", ".join(f"{activity}_count" for activity in SESSION_ACTIVITIES)}, other_count,
    landing_url_level2, exit_url_level2, event_count = 1 AS is_bounce, converted
FROM sessions
"""


def sessions_sql(events_sql: str) -> str:
    """SQL of the sessions of the events of ``events_sql`` (``SESSION_COLUMNS``, unordered), by the
    rules in the parameters ``$per_domain``, ``$timeout`` and ``$cap`` (see :func:`session_params`)."""
    return _SESSIONIZE_TEMPLATE.replace("{events_sql}", events_sql)


def session_params(settings: SessionSettings) -> dict[str, object]:
    """The parameters of :func:`sessions_sql` for ``settings``."""
    return {"per_domain": bool(settings.per_domain), "timeout": int(settings.inactivity_timeout_seconds),
            "cap": int(settings.max_session_seconds)}


def empty_sessions() -> pd.DataFrame:
    """A frame with no rows and the columns and dtypes of :func:`sessionize`'s result."""
    dtypes = {c: "object" for c in SESSION_COLUMNS}
    dtypes |= {c: "datetime64[us]" for c in ("session_start", "session_end")}
    dtypes |= {c: "int64" for c in SESSION_COLUMNS if c.endswith("_count") or c == "duration_seconds"}
    dtypes |= {"is_bounce": "bool", "converted": "bool"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in SESSION_COLUMNS})


def sessionize(events: pd.DataFrame, settings: SessionSettings = SessionSettings()) -> pd.DataFrame:
    """Group events into sessions by the rules of ``settings`` (see the module docstring).

    Args:
        events: at least ``SESSION_EVENT_COLUMNS``: event_id, user_id (str), time_stamp (naive
            UTC datetime), url_level1, url_level2 (str, may be NULL), activity (str). Other
            columns are ignored. Ties in time_stamp are ordered by event_id.

    Returns:
        One row per session, the columns of ``USER_SESSIONS`` in the contract (``SESSION_COLUMNS``;
        session_id: see :func:`session_id_of`), sorted by session_start, user_id, url_level1,
        session_id; naive UTC datetimes.

    Raises:
        ValueError: a required column is missing, or user_id or time_stamp is NULL.
    """
    if events.empty and not set(SESSION_EVENT_COLUMNS) <= set(events.columns):
        return empty_sessions()
    missing = [c for c in SESSION_EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"sessionize: the events lack the column(s) {missing}")
    nulls = [c for c in ("user_id", "time_stamp") if events[c].isna().any()]
    if nulls:
        raise ValueError(f"sessionize: {', '.join(nulls)} must never be NULL")
    if events.empty:
        return empty_sessions()
    con = new_connection()
    con.register("events_frame", events[SESSION_EVENT_COLUMNS])
    sessions = con.execute(f"{sessions_sql('SELECT * FROM events_frame')} "
                           "ORDER BY session_start, user_id, url_level1, session_id", session_params(settings)).df()
    con.close()
    return sessions[SESSION_COLUMNS]


def sessions_starting_in(sessions: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """The sessions whose session_start is in [start, end) (naive UTC), index reset."""
    starts = sessions["session_start"]
    return sessions[(starts >= start) & (starts < end)].reset_index(drop=True)
