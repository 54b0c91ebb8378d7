"""Column schemas of the stored tables: names, DuckDB types and meanings.

They serve three purposes: the ``dagster/column_schema`` metadata the UI shows, the DDL with
which the IO manager creates each table, and the check that an asset's frame has exactly these
columns before it is written.
"""

from __future__ import annotations

from dagster import TableColumn, TableSchema


def _schema(*columns: tuple[str, str, str]) -> TableSchema:
    return TableSchema(columns=[TableColumn(name, type_, description) for name, type_, description in columns])


_LINEAGE = (
    ("source_file", "VARCHAR", "Path of the source file, as matched by the source glob"),
    ("line_number", "BIGINT", "1-based line number in source_file"),
)

RAW_EVENTS = _schema(
    *_LINEAGE,
    ("event_id", "VARCHAR", "event_id as sent (JSON string or integer, as text)"),
    ("user_id", "VARCHAR", "user.id as sent (JSON integer or string, as text)"),
    ("session_id", "VARCHAR", "user.session_id as sent; NULL when absent"),
    ("ip", "VARCHAR", "user.ip as sent (raw: this table is internal, never exported)"),
    ("action", "VARCHAR", "action as sent (not trimmed)"),
    ("url", "VARCHAR", "url as sent"),
    ("timestamp_text", "VARCHAR", "timestamp as sent (DD/MM/YYYY HH:MM:SS in the source time zone)"),
    ("time_stamp", "TIMESTAMP", "Event time in UTC (naive), parsed day-first; the partition column"),
)

REJECTED_EVENTS = _schema(
    *_LINEAGE,
    ("time_stamp", "TIMESTAMP", "Event time in UTC when it could be parsed, else NULL"),
    ("reason", "VARCHAR", "Reason code (see README: invalid_json, missing_field, bad_url, ...)"),
    ("field", "VARCHAR", "The field at fault (timestamp, user.id, url, ...); NULL for line-level reasons"),
    ("message", "VARCHAR", "Human-readable explanation naming the field and the value"),
    ("raw_line", "VARCHAR", "The raw line, cut at 2000 characters"),
    ("raw_bytes", "BIGINT", "Full length of the raw line in bytes"),
    ("rejected_at", "TIMESTAMP", "When the line was quarantined (UTC, the run's time)"),
)

CLEANED_EVENTS = _schema(
    ("event_id", "VARCHAR", "Event identifier; unique per UTC hour"),
    ("user_id", "VARCHAR", "user.id as a string (identifier of the user)"),
    ("session_id", "VARCHAR", "The receiver's session_id (differs on every event; not a session)"),
    ("time_stamp", "TIMESTAMP", "Event time in UTC (naive); the partition column"),
    ("url_level1", "VARCHAR", "Registrable domain of the URL's host, lower-case"),
    ("url_level2", "VARCHAR", "First non-empty path segment; NULL when absent"),
    ("url_level3", "VARCHAR", "Second non-empty path segment; NULL when absent"),
    ("activity", "VARCHAR", "action, trimmed"),
    ("ip_anonymised", "VARCHAR", "IPv4 with last octet zeroed / IPv6 /64 network; NULL when invalid"),
    ("ip_valid", "BOOLEAN", "Whether user.ip was a valid IP address"),
    *_LINEAGE,
)

DUPLICATE_EVENTS = _schema(
    ("event_id", "VARCHAR", "The repeated event_id"),
    ("time_stamp", "TIMESTAMP", "Event time (UTC) of the dropped line; the partition column"),
    ("duplicate_kind", "VARCHAR", "retry (same payload as the kept line) or conflict (different payload)"),
    *_LINEAGE,
    ("kept_source_file", "VARCHAR", "Source file of the line that was kept"),
    ("kept_line_number", "BIGINT", "Line number of the line that was kept"),
)

HOURLY_ACTIVITY = _schema(
    ("time_bucket", "VARCHAR", "UTC hour as YYYYMMDDHH; the partition column"),
    ("url_level1", "VARCHAR", "Registrable domain"),
    ("url_level2", "VARCHAR", "First path segment; NULL is its own group"),
    ("activity", "VARCHAR", "Activity"),
    ("activity_count", "BIGINT", "Number of events"),
    ("user_count", "BIGINT", "Number of distinct user_id"),
)

EVENT_TABLE_CSV = _schema(
    ("user_id", "string", "Identifier of the user"),
    ("time_stamp", "string", "ISO 8601 UTC, e.g. 2017-02-02T20:22:00Z"),
    ("url_level1", "string", "Registrable domain"),
    ("url_level2", "string", "First path segment; empty when NULL"),
    ("url_level3", "string", "Second path segment; empty when NULL"),
    ("activity", "string", "Activity"),
    ("event_id", "string", "Event identifier, for lineage"),
)

HOURLY_ACTIVITY_CSV = _schema(
    *((c.name, "string" if c.type == "VARCHAR" else "integer", c.description) for c in HOURLY_ACTIVITY.columns)
)

USER_SESSIONS = _schema(
    ("session_id", "VARCHAR", "MD5 of user_id|url_level1|session_start (deterministic; url_level1 empty when sessions are per user)"),
    ("user_id", "VARCHAR", "Identifier of the user"),
    ("url_level1", "VARCHAR", "The session's domain (sessions are per user and domain by default)"),
    ("session_start", "TIMESTAMP", "First event's time, UTC (naive); the partition column"),
    ("session_end", "TIMESTAMP", "Last event's time, UTC (naive)"),
    ("duration_seconds", "BIGINT", "session_end - session_start in whole seconds (0 for one event)"),
    ("event_count", "BIGINT", "Number of events"),
    ("page_view_count", "BIGINT", "Events with activity page_view"),
    ("button_click_count", "BIGINT", "Events with activity button_click"),
    ("list_directory_count", "BIGINT", "Events with activity list_directory"),
    ("claim_count", "BIGINT", "Events with activity claim"),
    ("other_count", "BIGINT", "Events with any other activity"),
    ("landing_url_level2", "VARCHAR", "url_level2 of the first event (ties by event_id); NULL when absent"),
    ("exit_url_level2", "VARCHAR", "url_level2 of the last event (ties by event_id); NULL when absent"),
    ("is_bounce", "BOOLEAN", "The session has exactly one event"),
    ("converted", "BOOLEAN", "The session has at least one claim"),
)

USER_SESSIONS_CSV = _schema(
    *((c.name, {"VARCHAR": "string", "TIMESTAMP": "string", "BIGINT": "integer", "BOOLEAN": "boolean"}[c.type],
       c.description + (" (ISO 8601 UTC, e.g. 2017-02-02T20:12:34Z)" if c.type == "TIMESTAMP" else "")
       + (" (true/false)" if c.type == "BOOLEAN" else ""))
      for c in USER_SESSIONS.columns)
)
