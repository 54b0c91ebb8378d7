"""The contract's transformations as SQL over a sub-query (an upstream table slice): raw events ->
duplicate lines and cleaned events -> the hourly aggregate. The rows stay in DuckDB; all times are
naive UTC."""

from __future__ import annotations

from hipages_pipeline.lib.events.ips import ipv4_sql


def duplicates_sql(raw_sql: str) -> str:
    """SQL of the duplicate lines among the raw events of ``raw_sql`` (the columns of ``duplicate_events``).

    A duplicate is a second line with the same event_id in the same UTC hour (so that hour-by-hour
    and ranged runs agree). The first line (by source file, then line number) is kept. A copy with
    the same payload is a ``retry``; with any other payload a ``conflict``. Only the lines of
    repeated (event_id, hour) keys are ranked, so the cost is one aggregate over the events.
    """
    # NOT MATERIALIZED: DuckDB would otherwise copy every raw event into a temporary CTE result
    # because it is read twice (4x slower at 10M events); reading the table twice is cheaper.
    return f"""
WITH raw AS NOT MATERIALIZED (SELECT *, date_trunc('hour', time_stamp) AS hour FROM ({raw_sql})),
repeated AS (
    SELECT event_id, hour FROM raw GROUP BY ALL HAVING count(*) > 1
),
ranked AS (
    SELECT r.*,
        row_number() OVER w AS copy_number,
        first_value(source_file) OVER w AS kept_source_file,
        first_value(line_number) OVER w AS kept_line_number,
        first_value([user_id, session_id, ip, action, url, timestamp_text]) OVER w AS kept_payload
    FROM raw r SEMI JOIN repeated k ON r.event_id = k.event_id AND r.hour = k.hour
    WINDOW w AS (PARTITION BY r.event_id, r.hour ORDER BY r.source_file, r.line_number)
)
SELECT event_id, time_stamp,
    CASE WHEN [user_id, session_id, ip, action, url, timestamp_text] IS NOT DISTINCT FROM kept_payload
         THEN 'retry' ELSE 'conflict' END AS duplicate_kind,
    source_file, line_number, kept_source_file, kept_line_number
FROM ranked WHERE copy_number > 1
"""


def cleaned_sql(raw_sql: str, duplicates_sql: str, url_map: str, other_ips: str) -> str:
    """SQL of the contract's cleaned events (the columns of ``cleaned_events``): the raw events of ``raw_sql``
    without the lines of ``duplicates_sql``, URLs split by the view ``url_map`` (see
    :func:`hipages_pipeline.lib.events.urls.split_urls`), IPs anonymised in SQL (dotted quads) or by
    the view ``other_ips`` (see :func:`hipages_pipeline.lib.events.ips.other_forms`).

    time_stamp is UTC; activity is ``action`` trimmed; ip_anonymised is the /24 or /64 network,
    NULL when ip_valid is False.
    """
    is_quad, anonymised = ipv4_sql("r.ip")
    return f"""
WITH raw AS ({raw_sql}), duplicates AS ({duplicates_sql}),
kept AS (
    SELECT r.*, CASE WHEN r.ip IS NULL THEN NULL WHEN {is_quad} THEN {anonymised} ELSE o.ip_anonymised END AS ip_anonymised
    FROM raw r
    ANTI JOIN duplicates d ON r.source_file = d.source_file AND r.line_number = d.line_number
    LEFT JOIN {other_ips} o ON r.ip = o.ip
)
SELECT k.event_id, k.user_id, k.session_id, k.time_stamp, u.url_level1, u.url_level2, u.url_level3,
    trim(k.action) AS activity, k.ip_anonymised, k.ip_anonymised IS NOT NULL AS ip_valid, k.source_file, k.line_number
FROM kept k LEFT JOIN {url_map} u ON k.url = u.url
"""


def hourly_activity_sql(cleaned_sql: str) -> str:
    """SQL of the aggregate at the grain (time_bucket, url_level1, url_level2, activity).

    Columns: time_bucket (``YYYYMMDDHH``, UTC hour), url_level1, url_level2 (may be NULL: NULL is
    its own group), activity, activity_count (BIGINT, events) and user_count (BIGINT, distinct
    user_id). Unordered: the readers sort (the CSV layout by the grain, NULLs first).
    """
    return f"""
SELECT strftime(time_stamp, '%Y%m%d%H') AS time_bucket, url_level1, url_level2, activity,
    count(*)::BIGINT AS activity_count, count(DISTINCT user_id)::BIGINT AS user_count
FROM ({cleaned_sql}) GROUP BY ALL
"""
