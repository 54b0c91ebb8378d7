"""Validation: numbered source lines -> typed events or quarantine rows with a reason code.

Every line ends in exactly one of two places: a typed event (``raw_events``) or a quarantine row
(``rejected_events``). Parsing and type checks run in DuckDB SQL over whole batches (DuckDB's JSON
reader), URL checks once per distinct URL (:mod:`hipages_pipeline.lib.events.urls`): there is no
Python loop per event.

Reason codes (a fixed set; the first rule that fails, in this order, wins):
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from hipages_pipeline.lib.contract import (
    RAW_EVENTS,
    RAW_LINE_LIMIT,
    REASON_CODES,
    REJECTED_EVENTS,
    SOURCE_TIMESTAMP_FORMAT,
)
from hipages_pipeline.lib.events.reader import DEFAULT_CHUNK_BYTES, iter_line_batches
from hipages_pipeline.lib.events.urls import split_urls

__doc__ = (__doc__ or "") + "\n".join(f"- ``{code}``: {text}" for code, text in REASON_CODES.items())


EVENT_COLUMNS = RAW_EVENTS.column_names
REJECT_COLUMNS = [c for c in REJECTED_EVENTS.column_names if c != "rejected_at"]
"""The quarantine row of a line (``rejected_at`` is added when it is stored)."""


@dataclass(frozen=True)
class ValidationSettings:
    """How lines are read and judged.

    source_timezone: IANA zone in which ``timestamp`` is written (default UTC).
    earliest: first valid event time, UTC (the partitions' start).
    future_tolerance: how far past "now" (UTC) an event time may be before it is out of range.
    max_line_bytes: longer lines are quarantined as ``line_too_long``.
    chunk_bytes: read size per batch (bounds memory).
    """

    source_timezone: str = "UTC"
    earliest: datetime = datetime(2017, 1, 1)
    future_tolerance: timedelta = timedelta(days=1)
    max_line_bytes: int = 1024 * 1024
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    now: datetime | None = field(default=None, compare=False)

    def latest(self) -> datetime:
        now = self.now or datetime.now(timezone.utc).replace(tzinfo=None)
        return now + self.future_tolerance


# Two JSON parses per line: json_type with a list of paths gives the JSON types of the root and
# of the fields (tp[1] = root, t1..t8 = tp[2..9]) and json_extract_string with the same paths their
# unquoted values (v1..v8); every rule reads those columns, and the first failing rule's number
# picks reason, field and message. Messages and raw lines are built for rejected lines only.
_FIELDS = ["timestamp", "event_id", "user", "user.id", "user.session_id", "user.ip", "action", "url"]
_ID_TYPES = ("('VARCHAR', 'BIGINT', 'UBIGINT')", "a string or an integer")
_STRING = ("('VARCHAR')", "a string")
Rule = tuple[str, str, str, str]  # (failing condition, reason, field, message expression)


def _raw(i: int) -> str:
    """The JSON text of field i (for messages: computed on rejected lines only)."""
    return f"left(json_extract(text, '$.{_FIELDS[i - 1]}')::VARCHAR, 200)"


def _required(i: int, name: str, types: tuple[str, str]) -> list[Rule]:
    """Rules for a required scalar field: present, not null, of the right type, not empty."""
    sql_types, label = types
    return [
        (f"t{i} IS NULL OR t{i} = 'NULL'", "missing_field", name, f"'field {name} is missing or null'"),
        (f"t{i} NOT IN {sql_types}", "wrong_type", name,
         f"format('field {name} is {{}}, expected {label}: {{}}', lower(t{i}), {_raw(i)})"),
        (f"trim(v{i}) = ''", "missing_field", name, f"'field {name} is empty'"),
    ]


def _optional(i: int, name: str, types: tuple[str, str]) -> list[Rule]:
    """Rules for an optional field: it may be absent or null, but when present it has the right type."""
    sql_types, label = types
    return [(f"t{i} <> 'NULL' AND t{i} NOT IN {sql_types}", "wrong_type", name,
             f"format('field {name} is {{}}, expected {label} or null: {{}}', lower(t{i}), {_raw(i)})")]


_TIME_RULES: list[Rule] = [
    *_required(1, "timestamp", _STRING),
    ("ts_local IS NULL", "bad_timestamp", "timestamp",
     "format('timestamp {} is not a real date in DD/MM/YYYY HH:MM:SS form', v1)"),
    ("ts_utc < $earliest OR ts_utc > $latest", "timestamp_out_of_range", "timestamp",
     "format('timestamp {} (UTC {}) is outside {} .. {}', v1, ts_utc, $earliest, $latest)"),
]
_FIELD_RULES: list[Rule] = [
    *_required(2, "event_id", _ID_TYPES),
    ("t3 IS NULL OR t3 = 'NULL'", "missing_field", "user", "'field user is missing or null'"),
    ("t3 <> 'OBJECT'", "wrong_type", "user", f"format('field user is {{}}, expected an object: {{}}', lower(t3), {_raw(3)})"),
    *_required(4, "user.id", _ID_TYPES),
    *_optional(5, "user.session_id", _ID_TYPES),
    *_optional(6, "user.ip", _STRING),
    *_required(7, "action", _STRING),
    ("t8 IS NULL OR t8 = 'NULL'", "missing_field", "url", "'field url is missing or null'"),
    ("t8 <> 'VARCHAR'", "wrong_type", "url", f"format('field url is {{}}, expected a string: {{}}', lower(t8), {_raw(8)})"),
]


def _literal_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


_EVENT_COLUMNS_SQL = """
    v2 AS event_id,
    v4 AS user_id,
    CASE WHEN t5 <> 'NULL' THEN v5 END AS session_id,
    CASE WHEN t6 <> 'NULL' THEN v6 END AS ip,
    v7 AS action,
    v8 AS url,"""
"""The typed event columns of a fully checked line (read from the parsed values v2..v8)."""

# The session time zone is UTC, so a UTC source needs no conversion.
_TO_UTC_SQL = "CASE WHEN $tz = 'UTC' THEN ts_local ELSE timezone('UTC', timezone($tz, ts_local)) END"


def _judged_sql(fields: list[str], rules: list[Rule]) -> str:
    """The CTEs up to ``judged``: each line framed, parsed into t1.., v1.., timed and given the
    number of its first failing rule (``rule_no``)."""
    paths = [f"$.{f}" for f in fields]
    types = ", ".join(f"tp[{i + 1}] AS t{i}, vs[{i}] AS v{i}" for i in range(1, len(fields) + 1))
    rule_no = "CASE " + " ".join(f"WHEN {rule[0]} THEN {n}" for n, rule in enumerate(rules, start=1)) + " END"
    return f"""
WITH lines AS (
    SELECT source_file, line_number, read_error, raw_excerpt,
        CASE WHEN ends_with(line, chr(13)) THEN rtrim(line, chr(13)) ELSE line END AS text
    FROM batch
), framed AS (
    SELECT *,
        CASE
            WHEN read_error IS NOT NULL THEN read_error
            WHEN strlen(text) > $max_line_bytes THEN 'line_too_long'
            WHEN regexp_full_match(text, '\\s*') THEN 'blank_line'
            WHEN NOT json_valid(text) THEN 'invalid_json'
        END AS framing_reason
    FROM lines
), parsed AS (
    SELECT *,
        CASE WHEN framing_reason IS NULL THEN json_type(text, {['$', *paths]!r}) END AS tp,
        CASE WHEN framing_reason IS NULL AND tp[1] = 'OBJECT' THEN json_extract_string(text, {paths!r}) END AS vs
    FROM framed
), typed AS (
    SELECT *, coalesce(framing_reason, CASE WHEN tp[1] <> 'OBJECT' THEN 'not_an_object' END) AS line_reason,
        {types}
    FROM parsed
), times AS (
    SELECT *, try_strptime(CASE WHEN t1 = 'VARCHAR' THEN trim(v1) END, '{SOURCE_TIMESTAMP_FORMAT}') AS ts_local FROM typed
), utc AS (
    SELECT *, {_TO_UTC_SQL} AS ts_utc FROM times
), judged AS (
    SELECT *, CASE WHEN line_reason IS NULL THEN {rule_no} END AS rule_no FROM utc
)
"""


def _verdict_sql(rules: list[Rule], event_columns: str) -> str:
    """The final SELECT over ``judged``: the event columns, then reason, field, message and the raw
    line (the last three for rejected lines only)."""
    message = "CASE rule_no " + " ".join(f"WHEN {n} THEN {rule[3]}" for n, rule in enumerate(rules, start=1)) + " END"
    return f"""SELECT
    source_file,
    line_number,{event_columns}
    v1 AS timestamp_text,
    ts_utc AS time_stamp,
    coalesce(line_reason, {_literal_list([r[1] for r in rules])}[rule_no]) AS reason,
    {_literal_list([r[2] for r in rules])}[rule_no] AS field,
    CASE line_reason
        WHEN 'invalid_encoding' THEN CASE WHEN line_number = 1 AND starts_with(raw_excerpt, chr(31) || chr(65533))
            THEN 'the line is not valid UTF-8 (the file looks gzip-compressed: name it *.gz)'
            ELSE 'the line is not valid UTF-8' END
        WHEN 'line_too_long' THEN format('the line has {{}} bytes, more than the limit of {{}}', strlen(text), $max_line_bytes)
        WHEN 'blank_line' THEN 'the line is blank'
        WHEN 'invalid_json' THEN CASE WHEN trim(text) = '[' AND line_number = 1
            THEN 'the line is not valid JSON: [ (the file looks like one JSON array document; the source must be JSON Lines, one event object per line)'
            ELSE format('the line is not valid JSON: {{}}', left(text, 80)) END
        WHEN 'not_an_object' THEN format('the line is a JSON {{}}, not an object', tp[1])
        ELSE {message}
    END AS message,
    CASE WHEN line_reason IS NOT NULL OR rule_no IS NOT NULL
        THEN left(coalesce(text, raw_excerpt), {RAW_LINE_LIMIT}) END AS raw_line,
    CASE WHEN line_reason IS NOT NULL OR rule_no IS NOT NULL THEN coalesce(strlen(text), strlen(raw_excerpt)) END AS raw_bytes
FROM judged
"""


def _classify_sql(full: bool) -> str:
    """The SQL that classifies a batch. ``full`` checks every field and returns the typed event
    columns; otherwise only the line and its timestamp are judged (enough to know its hour)."""
    rules = _TIME_RULES + (_FIELD_RULES if full else [])
    fields = _FIELDS if full else _FIELDS[:1]
    return _judged_sql(fields, rules) + _verdict_sql(rules, _EVENT_COLUMNS_SQL if full else "")


_CLASSIFY_SQL = _classify_sql(full=True)
_TIME_ONLY_SQL = _classify_sql(full=False)

URL_MAP_ROWS = 200_000
"""Split URLs kept across batches at most (then the map starts afresh)."""

UNPLACED_SQL = "reason IS NOT NULL AND (time_stamp IS NULL OR reason = 'timestamp_out_of_range')"
"""A verdict (over the columns of :func:`iter_classified`) that puts a line in no hour: rejected,
with no usable event time."""

# A line that passed every other rule but whose URL has no registrable domain is a bad_url reject.
_BAD_URL = "c.reason IS NULL AND u.url_error IS NOT NULL"
# The line of a bad_url reject is read back from the batch (classified does not copy every line).
_URL_SQL = f"""
WITH bad_lines AS (
    SELECT b.line_number, CASE WHEN ends_with(b.line, chr(13)) THEN rtrim(b.line, chr(13)) ELSE b.line END AS text
    FROM batch b SEMI JOIN (SELECT c.line_number FROM classified c JOIN url_map u ON c.url = u.url WHERE {_BAD_URL}) k
        ON b.line_number = k.line_number
)
SELECT c.* REPLACE (
    CASE WHEN {_BAD_URL} THEN 'bad_url' ELSE c.reason END AS reason,
    CASE WHEN {_BAD_URL} THEN 'url' ELSE c.field END AS field,
    CASE WHEN {_BAD_URL} THEN u.url_error ELSE c.message END AS message,
    CASE WHEN {_BAD_URL} THEN left(l.text, {RAW_LINE_LIMIT}) ELSE c.raw_line END AS raw_line,
    CASE WHEN {_BAD_URL} THEN strlen(l.text) ELSE c.raw_bytes END AS raw_bytes
)
FROM classified c
LEFT JOIN url_map u ON c.url = u.url  -- url_map has one row per distinct url
LEFT JOIN bad_lines l ON c.line_number = l.line_number
"""


CLASSIFY_MEMORY_LIMIT = "256MB"
"""Memory of the in-memory DuckDB that classifies the source lines: one batch (``chunk_bytes`` of
lines) at a time needs far less; the tables' database has its own limit (the warehouse's)."""


def new_connection(threads: int | None = None, memory_limit: str = CLASSIFY_MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for transformations, with a fixed UTC session time zone."""
    con = duckdb.connect(config={"memory_limit": memory_limit, **({"threads": threads} if threads else {})})
    con.execute("SET TimeZone = 'UTC'")
    return con


def classify_batches(
    paths: Sequence[Path], settings: ValidationSettings, con: duckdb.DuckDBPyConnection, full: bool = True
) -> Iterator[int]:
    """Classify the source lines batch by batch on ``con``; yield each batch's number of lines.

    While a batch is current (until the next item is requested), ``con`` has the view ``batch``
    (the lines, see :mod:`hipages_pipeline.lib.events.reader`), the temporary table ``classified``
    (one row per line: the columns of :func:`iter_classified` before the URL rule) and, with
    ``full``, the view ``judged`` (the columns of :func:`iter_classified`: every rule applied, URL
    included) and the table ``url_map`` (every URL seen, split; see
    :func:`hipages_pipeline.lib.events.urls.split_urls`).

    Raises:
        SourceReadError: a file cannot be read (see :mod:`hipages_pipeline.lib.events.reader`).
    """
    params = {
        "tz": settings.source_timezone,
        "earliest": settings.earliest,
        "latest": settings.latest(),
        "max_line_bytes": settings.max_line_bytes,
    }
    sql = _CLASSIFY_SQL if full else _TIME_ONLY_SQL
    if full:  # the URLs split so far, kept across batches (a site has a bounded set of URLs)
        con.execute("CREATE OR REPLACE TEMP TABLE url_map (url VARCHAR, url_level1 VARCHAR, url_level2 VARCHAR, "
                    "url_level3 VARCHAR, url_error VARCHAR)")
    for batch in iter_line_batches(paths, settings.chunk_bytes):
        con.register("batch", batch)
        con.execute(f"CREATE OR REPLACE TEMP TABLE classified AS {sql}", params)
        if full:
            if con.execute("SELECT count(*) FROM url_map").fetchone()[0] > URL_MAP_ROWS:
                con.execute("DELETE FROM url_map")  # unbounded URL sets (ids in paths): start afresh
            urls = [url for (url,) in con.execute(
                "SELECT DISTINCT url FROM classified WHERE reason IS NULL AND url NOT IN (SELECT url FROM url_map)").fetchall()]
            if urls:
                con.register("new_urls", split_urls(pd.Series(urls, dtype="object")))
                con.execute("INSERT INTO url_map SELECT url, url_level1, url_level2, url_level3, url_error FROM new_urls")
                con.unregister("new_urls")
            con.execute(f"CREATE OR REPLACE TEMP VIEW judged AS {_URL_SQL}")
        yield batch.num_rows
        if full:
            con.execute("DROP VIEW judged")
        con.unregister("batch")
    con.execute("DROP TABLE IF EXISTS classified")
    con.execute("DROP TABLE IF EXISTS url_map")


def iter_classified(
    paths: Sequence[Path], settings: ValidationSettings, con: duckdb.DuckDBPyConnection, full: bool = True
) -> Iterator[pa.Table]:
    """Yield, per batch of source lines, one row per line with its typed fields and verdict.

    Columns: the ``EVENT_COLUMNS`` of raw_events, then ``reason``, ``field``, ``message``,
    ``raw_line`` and ``raw_bytes`` (NULL ``reason`` = the line is an event). ``time_stamp`` is the
    event time in UTC (naive TIMESTAMP) whenever the timestamp could be parsed, even on rejects.

    With ``full=False`` only the line and its timestamp are judged (``reason`` NULL means "has a
    usable event time", not "is an event"), the event columns other than ``timestamp_text`` and
    ``time_stamp`` are absent, and no URL is parsed: enough to know each line's hour, and
    exactly the same verdict as the full check for lines without one.
    """
    for _ in classify_batches(paths, settings, con, full):
        yield con.sql("SELECT * FROM judged" if full else "SELECT * FROM classified").to_arrow_table()
