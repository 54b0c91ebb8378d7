"""The data contract in code: every table declared once, every derived form computed from here.

A :class:`Table` holds its columns (name, DuckDB type, nullability, meaning), its grain (the
columns that identify a row), its partition expression (the SQL that gives a row's UTC hour) and,
for the analysts' tables, its :class:`CsvLayout`. From these derive: the DuckDB DDL
(:meth:`Table.ddl`), the Arrow schema (:meth:`Table.arrow_schema`), the CSV column list and the
SQL that formats each value (:meth:`CsvLayout.select_sql`), Dagster's column schema
(``hipages_pipeline.defs.common.column_schema``) and ``docs/data_contract.md``
(:mod:`hipages_pipeline.lib.contract_doc`). ``test_contract.py`` fails when one of them, or a
table's SQL, disagrees with this module.

All times are UTC; stored as naive ``TIMESTAMP`` values, written to CSV files as ISO 8601.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

SOURCE_TIMESTAMP_FORMAT = "%d/%m/%Y %H:%M:%S"
"""How the source writes ``timestamp`` (day first), in the source time zone."""
ISO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""How every CSV file writes a time (strftime codes, the same in Python and DuckDB)."""
TIME_BUCKET_FORMAT = "%Y%m%d%H"
"""``time_bucket`` and the per-hour file names: the UTC hour as YYYYMMDDHH."""
EARLIEST_EVENT_TIME = datetime(2017, 1, 1)
"""The first hourly partition: an earlier event time is quarantined as out of range."""
KNOWN_ACTIVITIES = ("page_view", "button_click", "list_directory", "claim")
"""Activities we know (others raise a WARN); sessions count each in ``<activity>_count``."""
RAW_LINE_LIMIT = 2000
"""Characters of a quarantined line kept in ``raw_line`` (``raw_bytes`` has its full size)."""

REASON_CODES: dict[str, str] = {
    "invalid_encoding": "the line's bytes are not valid UTF-8",
    "line_too_long": "the line is longer than max_line_bytes (default 1 MiB)",
    "blank_line": "the line is empty or only white space",
    "invalid_json": "the line is not valid JSON",
    "not_an_object": "the line is JSON, but an array, string, number, boolean or null",
    "missing_field": "a required field is absent, null or empty",
    "wrong_type": "a field has a JSON type the contract does not accept",
    "bad_timestamp": "timestamp is not a real date in DD/MM/YYYY HH:MM:SS form",
    "nonexistent_local_time": "timestamp is a local time the source time zone skips (clocks set forward)",
    "timestamp_out_of_range": "timestamp is before the first partition or too far in the future",
    "bad_url": "url is not an http(s) URL whose host has a registrable domain",
}
"""Why a line is quarantined. The rules are tried in this order and the first that fails wins:
the line itself (encoding, length, blank, JSON object), then ``timestamp`` (missing or wrong type,
then its value), then the other fields (missing, then wrong type), then the URL; so a line with
no event_id and an unparseable timestamp is ``bad_timestamp``."""

_ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "TIMESTAMP": pa.timestamp("us"), "BOOLEAN": pa.bool_()}
_CSV_TYPES = {"VARCHAR": "string", "BIGINT": "integer", "TIMESTAMP": "string", "BOOLEAN": "boolean"}


@dataclass(frozen=True)
class Column:
    """One column: ``type`` is its DuckDB type; ``nullable`` False means a check proves no NULL."""

    name: str
    type: str
    description: str
    nullable: bool = True


@dataclass(frozen=True)
class CsvLayout:
    """How a table becomes CSV files: one per UTC hour, ``<output_dir>/<directory>/<YYYYMMDDHH>.csv``,
    and the whole table, ``<output_dir>/<directory>.csv`` (the hours' files in hour order).

    ``columns``: the table's columns written, in order (TIMESTAMP as ISO 8601 UTC, BOOLEAN as
    true/false, NULL as an empty field); ``order_by``: the rows' order in a file, over the table's
    columns (qualified ``t.``).
    """

    directory: str
    columns: tuple[str, ...]
    order_by: str

    @property
    def whole_file(self) -> str:
        return f"{self.directory}.csv"


@dataclass(frozen=True)
class Table:
    """A table of the contract (see the module docstring)."""

    name: str
    description: str
    grain: tuple[str, ...]
    columns: tuple[Column, ...]
    partition_column: str | None = None
    """The column that places a row in an hourly partition; None for an unpartitioned table."""
    partition_time: str = "{}"
    """SQL of the UTC time of the partition column ``{}`` (e.g. parsing a text hour)."""
    csv: CsvLayout | None = field(default=None)
    by_source_file: bool = False
    """Partitioned by source file (one partition per landed file, column ``source_file``), not by hour."""

    @property
    def partition_expr(self) -> str | None:
        """SQL of the UTC time that places a row in its hour (the IO manager's ``partition_expr``)."""
        return self.partition_time.format(self.partition_column) if self.partition_column else None

    @property
    def partitioning(self) -> str:
        """How the table is partitioned, in words."""
        if self.by_source_file:
            return "by source file (`source_file`: one partition per landed file)"
        return f"hourly, by the UTC hour of `{self.partition_column}`" if self.partition_column else "unpartitioned"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def required(self) -> list[str]:
        """The columns that are never NULL."""
        return [c.name for c in self.columns if not c.nullable]

    def ddl(self, qualified_name: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` with the contract's columns and DuckDB types."""
        columns = ", ".join(f'"{c.name}" {c.type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {qualified_name} ({columns})"

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the table's rows (timestamps in microseconds, naive UTC)."""
        return pa.schema([(c.name, _ARROW_TYPES[c.type]) for c in self.columns])

    def csv_columns(self) -> list[Column]:
        """The CSV file's columns, in order, typed as the file holds them (string, integer, boolean)."""
        assert self.csv is not None, f"{self.name} has no CSV layout"
        formats = {"TIMESTAMP": " (ISO 8601 UTC, e.g. 2017-02-02T20:22:00Z)", "BOOLEAN": " (true/false)"}
        return [Column(c.name, _CSV_TYPES[c.type], c.description + formats.get(c.type, ""), c.nullable)
                for c in map(self.column, self.csv.columns)]

    def csv_select_sql(self, rows_sql: str, start: datetime, end: datetime) -> str:
        """The SELECT of one CSV file: the rows of ``rows_sql`` whose partition time is in
        [start, end) (naive UTC), formatted and ordered by the layout."""
        assert self.csv is not None and self.partition_expr is not None
        select = ", ".join(
            f"strftime(t.{c.name}, '{ISO_TIME_FORMAT}') AS {c.name}" if c.type == "TIMESTAMP" else f"t.{c.name}"
            for c in map(self.column, self.csv.columns))
        hour = self.partition_expr_over("t")
        return (f"SELECT {select} FROM ({rows_sql}) t WHERE {hour} >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' "
                f"AND {hour} < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}' ORDER BY {self.csv.order_by}")

    def partition_expr_over(self, alias: str) -> str:
        """The partition expression with its column qualified by ``alias``."""
        assert self.partition_column is not None
        return self.partition_time.format(f"{alias}.{self.partition_column}")


def _col(name: str, type_: str, description: str, nullable: bool = True) -> Column:
    return Column(name, type_, description, nullable)


_LINEAGE = (
    _col("source_file", "VARCHAR", "Path of the source file, as matched by the source glob", False),
    _col("line_number", "BIGINT", "1-based line number in source_file", False),
)

RAW_EVENTS = Table(
    "raw_events", "Source lines that are events, typed as they arrived (no cleaning yet), duplicates included.",
    grain=("source_file", "line_number"), partition_column="time_stamp", columns=(
        *_LINEAGE,
        _col("event_id", "VARCHAR", "event_id as sent (JSON string or integer, as text)"),
        _col("user_id", "VARCHAR", "user.id as sent (JSON integer or string, as text)"),
        _col("session_id", "VARCHAR", "user.session_id as sent; NULL when absent"),
        _col("ip", "VARCHAR", "user.ip as sent (raw: this table is internal, never exported)"),
        _col("action", "VARCHAR", "action as sent (not trimmed)"),
        _col("url", "VARCHAR", "url as sent"),
        _col("timestamp_text", "VARCHAR", "timestamp as sent (DD/MM/YYYY HH:MM:SS in the source time zone)"),
        _col("time_stamp", "TIMESTAMP", "Event time in UTC, parsed day-first; the partition column", False),
    ))

_REJECT_COLUMNS = (
    *_LINEAGE,
    _col("time_stamp", "TIMESTAMP", "Event time in UTC when it could be parsed, else NULL"),
    _col("reason", "VARCHAR", "Reason code (see the reason codes)", False),
    _col("field", "VARCHAR", "The field at fault (timestamp, user.id, url, ...); NULL for line-level reasons"),
    _col("message", "VARCHAR", "Human-readable explanation naming the field and the value", False),
    _col("raw_line", "VARCHAR", f"The raw line, cut at {RAW_LINE_LIMIT} characters"),
    _col("raw_bytes", "BIGINT", "Full length of the raw line in bytes", False),
    _col("rejected_at", "TIMESTAMP", "When the line was judged: its file's landing time (UTC)", False),
)
REJECTED_EVENTS = Table(
    "rejected_events", "The quarantine of an hour: source lines with a known event time that cannot become "
    "events, each with its reason, the field at fault and a message naming the value.",
    grain=("source_file", "line_number"), partition_column="time_stamp", columns=_REJECT_COLUMNS)
REJECTED_WITHOUT_HOUR = Table(
    "rejected_without_hour", "The quarantine of lines with no usable event time (invalid JSON, missing or "
    "unparseable timestamp, out of range): they belong to no hour.",
    grain=("source_file", "line_number"), columns=_REJECT_COLUMNS)

LANDED_LINES = Table(
    "landed_lines", "Every line of every landed source file, once: an event (reason NULL, typed as it arrived) "
    "or a quarantine row (reason set), with the UTC hour it belongs to. Re-landing a file replaces its rows.",
    grain=("source_file", "line_number"), by_source_file=True, columns=(
        *RAW_EVENTS.columns[:-1],
        _col("time_stamp", "TIMESTAMP", "Event time in UTC when it could be parsed, else NULL"),
        _col("hour", "TIMESTAMP", "The UTC hour the line belongs to (its hourly partition); NULL when it has no "
             "usable event time (it then belongs to rejected_without_hour)"),
        _col("ambiguous_time", "BOOLEAN", "The local time happened twice in the source time zone (read as the "
             "earlier instant)", False),
        _col("reason", "VARCHAR", "Reason code of a quarantined line; NULL for an event"),
        *(c for c in _REJECT_COLUMNS if c.name in ("field", "raw_line")),
        _col("message", "VARCHAR", "Why the line was quarantined; NULL for an event"),
        _col("raw_bytes", "BIGINT", "Full length of a quarantined line in bytes; NULL for an event"),
        _col("landed_at", "TIMESTAMP", "When the file was landed (UTC)", False),
    ))
LANDED_FILES = Table(
    "landed_files", "One row per landed source file: what the landing saw of it and what its lines became.",
    grain=("source_file",), by_source_file=True, columns=(
        _LINEAGE[0],
        _col("size_bytes", "BIGINT", "The file's size when it was landed", False),
        _col("mtime_ns", "BIGINT", "The file's modification time when it was landed (ns since the epoch); "
             "size and mtime_ns tell whether it changed since", False),
        _col("lines", "BIGINT", "Lines read (blank and undecodable ones included)", False),
        _col("events", "BIGINT", "Lines that became events (duplicates included)", False),
        _col("rejected", "BIGINT", "Lines quarantined (with or without an hour); lines = events + rejected",
             False),
        _col("first_hour", "TIMESTAMP", "Earliest UTC hour of its lines; NULL when none has an hour"),
        _col("last_hour", "TIMESTAMP", "Latest UTC hour of its lines; NULL when none has an hour"),
        _col("landed_at", "TIMESTAMP", "When the file was landed (UTC)", False),
    ))

CLEANED_EVENTS = Table(
    "cleaned_events", "One row per de-duplicated event, by the contract's rules.",
    grain=("event_id", "hour of time_stamp"), partition_column="time_stamp",
    csv=CsvLayout("event_table", ("user_id", "time_stamp", "url_level1", "url_level2", "url_level3", "activity",
                                  "event_id"), order_by="t.time_stamp, t.event_id"),
    columns=(
        _col("event_id", "VARCHAR", "Event identifier; unique per UTC hour", False),
        _col("user_id", "VARCHAR", "user.id as a string (identifier of the user)", False),
        _col("session_id", "VARCHAR", "The receiver's session_id (differs on every event; not a session)"),
        _col("time_stamp", "TIMESTAMP", "Event time in UTC; the partition column", False),
        _col("url_level1", "VARCHAR", "Registrable domain of the URL's host, lower-case", False),
        _col("url_level2", "VARCHAR", "First non-empty path segment; NULL when absent"),
        _col("url_level3", "VARCHAR", "Second non-empty path segment; NULL when absent"),
        _col("activity", "VARCHAR", "action, trimmed", False),
        _col("ip_anonymised", "VARCHAR", "IPv4 with last octet zeroed / IPv6 /64 network; NULL when invalid"),
        _col("ip_valid", "BOOLEAN", "Whether user.ip was a valid IP address"),
        *_LINEAGE,
    ))

DUPLICATE_EVENTS = Table(
    "duplicate_events", "Source lines dropped as duplicates: an event_id already seen in the same UTC hour.",
    grain=("source_file", "line_number"), partition_column="time_stamp", columns=(
        _col("event_id", "VARCHAR", "The repeated event_id", False),
        _col("time_stamp", "TIMESTAMP", "Event time (UTC) of the dropped line; the partition column", False),
        _col("duplicate_kind", "VARCHAR", "retry (same payload as the kept line) or conflict (different payload)",
             False),
        *_LINEAGE,
        _col("kept_source_file", "VARCHAR", "Source file of the line that was kept", False),
        _col("kept_line_number", "BIGINT", "Line number of the line that was kept", False),
    ))

HOURLY_ACTIVITY = Table(
    "hourly_activity", "Events and distinct users per hour, domain, first path segment and activity.",
    grain=("time_bucket", "url_level1", "url_level2", "activity"), partition_column="time_bucket",
    partition_time=f"strptime({{}}, '{TIME_BUCKET_FORMAT}')",
    csv=CsvLayout("hourly_activity", ("time_bucket", "url_level1", "url_level2", "activity", "activity_count",
                                      "user_count"),
                  order_by="t.time_bucket, t.url_level1 NULLS FIRST, t.url_level2 NULLS FIRST, "
                           "t.activity NULLS FIRST, t.activity_count, t.user_count"),
    columns=(
        _col("time_bucket", "VARCHAR", "UTC hour as YYYYMMDDHH; the partition column", False),
        *(CLEANED_EVENTS.column(name) for name in ("url_level1", "url_level2", "activity")),  # NULL: own group
        _col("activity_count", "BIGINT", "Number of events", False),
        _col("user_count", "BIGINT", "Number of distinct user_id", False),
    ))

_SESSION_COLUMNS = (
    _col("session_id", "VARCHAR", "MD5 of user_id|url_level1|session_start (deterministic; url_level1 empty "
         "when sessions are per user)", False),
    _col("user_id", "VARCHAR", "Identifier of the user", False),
    _col("url_level1", "VARCHAR", "The session's domain (sessions are per user and domain by default)"),
    _col("session_start", "TIMESTAMP", "First event's time, UTC; the partition column", False),
    _col("session_end", "TIMESTAMP", "Last event's time, UTC", False),
    _col("duration_seconds", "BIGINT", "session_end - session_start in whole seconds (0 for one event)", False),
    _col("event_count", "BIGINT", "Number of events", False),
    *(_col(f"{activity}_count", "BIGINT", f"Events with activity {activity}", False) for activity in KNOWN_ACTIVITIES),
    _col("other_count", "BIGINT", "Events with any other activity", False),
    _col("landing_url_level2", "VARCHAR", "url_level2 of the first event (ties by event_id); NULL when absent"),
    _col("exit_url_level2", "VARCHAR", "url_level2 of the last event (ties by event_id); NULL when absent"),
    _col("is_bounce", "BOOLEAN", "The session has exactly one event", False),
    _col("converted", "BOOLEAN", "The session has at least one claim", False),
)
USER_SESSIONS = Table(
    "user_sessions", "Users' visits: one row per session (30 minutes of inactivity end it, 24 hours cap it), "
    "in the UTC hour in which it starts.",
    grain=("session_id",), partition_column="session_start", columns=_SESSION_COLUMNS,
    csv=CsvLayout("user_sessions", tuple(c.name for c in _SESSION_COLUMNS),
                  order_by="t.session_start, t.user_id, t.url_level1, t.session_id"))

TABLES: dict[str, Table] = {t.name: t for t in (
    LANDED_LINES, LANDED_FILES, RAW_EVENTS, REJECTED_EVENTS, REJECTED_WITHOUT_HOUR, CLEANED_EVENTS, DUPLICATE_EVENTS, HOURLY_ACTIVITY,
    USER_SESSIONS)}
"""Every stored table, by name (the asset's name and the DuckDB table's)."""

REJECTED_FILE = "rejected_events.csv"
"""The whole quarantine as one CSV file: rejected_events (hour order), then rejected_without_hour;
rows by source_file, line_number; times ISO 8601 UTC."""
