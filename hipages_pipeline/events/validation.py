"""Validation: numbered source lines -> typed events or quarantine rows with a reason code.

Every line ends in exactly one of two places: a typed event (``raw_events``) or a quarantine row
(``rejected_events``). Parsing and type checks run in DuckDB SQL over whole batches (DuckDB's JSON
reader), URL checks once per distinct URL (:mod:`hipages_pipeline.events.urls`): there is no
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
import pyarrow.compute as pc

from hipages_pipeline.events.reader import DEFAULT_CHUNK_BYTES, iter_line_batches
from hipages_pipeline.events.urls import split_urls

REASON_CODES: dict[str, str] = {
    "invalid_encoding": "the line's bytes are not valid UTF-8",
    "line_too_long": "the line is longer than max_line_bytes (default 1 MiB)",
    "blank_line": "the line is empty or only white space",
    "invalid_json": "the line is not valid JSON",
    "not_an_object": "the line is JSON, but an array, string, number, boolean or null",
    "missing_field": "a required field is absent, null or empty",
    "wrong_type": "a field has a JSON type the contract does not accept",
    "bad_timestamp": "timestamp is not a real date in DD/MM/YYYY HH:MM:SS form",
    "timestamp_out_of_range": "timestamp is before the first partition or too far in the future",
    "bad_url": "url is not an http(s) URL whose host has a registrable domain",
}
__doc__ = (__doc__ or "") + "\n".join(f"- ``{code}``: {text}" for code, text in REASON_CODES.items())

TIMESTAMP_FORMAT = "%d/%m/%Y %H:%M:%S"
RAW_LINE_LIMIT = 2000
"""Characters of the raw line kept in the quarantine (``raw_line``); ``raw_bytes`` has its size."""

EVENT_COLUMNS = [
    "source_file", "line_number", "event_id", "user_id", "session_id", "ip", "action", "url",
    "timestamp_text", "time_stamp",
]
REJECT_COLUMNS = [
    "source_file", "line_number", "time_stamp", "reason", "field", "message", "raw_line",
    "raw_bytes",
]


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


# One JSON parse per line: json_extract with a list of paths returns the fields as JSON values.
_FIELDS = ["timestamp", "event_id", "user", "user.id", "user.session_id", "user.ip", "action", "url"]
_ID_TYPES = ("('VARCHAR', 'BIGINT', 'UBIGINT')", "a string or an integer")
_STRING = ("('VARCHAR')", "a string")


def _type(i: int) -> str:
    return f"json_type(j[{i}])"


def _value(i: int) -> str:
    return f"(j[{i}] ->> '$')"


def _required(i: int, name: str, types: tuple[str, str]) -> list[tuple[str, str, str, str]]:
    """(condition, reason, field, message) rules for a required scalar field."""
    sql_types, label = types
    return [
        (f"{_type(i)} IS NULL OR {_type(i)} = 'NULL'", "missing_field", name,
         f"'field {name} is missing or null'"),
        (f"{_type(i)} NOT IN {sql_types}", "wrong_type", name,
         f"format('field {name} is {{}}, expected {label}: {{}}', lower({_type(i)}), left(j[{i}]::VARCHAR, 200))"),
        (f"trim({_value(i)}) = ''", "missing_field", name, f"'field {name} is empty'"),
    ]


def _optional(i: int, name: str, types: tuple[str, str]) -> list[tuple[str, str, str, str]]:
    """Rules for an optional field: it may be absent or null, but when present it has the right type."""
    sql_types, label = types
    return [
        (f"{_type(i)} IS NOT NULL AND {_type(i)} <> 'NULL' AND {_type(i)} NOT IN {sql_types}",
         "wrong_type", name,
         f"format('field {name} is {{}}, expected {label} or null: {{}}', lower({_type(i)}), left(j[{i}]::VARCHAR, 200))"),
    ]


_RULES: list[tuple[str, str, str, str]] = [
    *_required(1, "timestamp", _STRING),
    ("ts_local IS NULL", "bad_timestamp", "timestamp",
     f"format('timestamp {{}} is not a real date in DD/MM/YYYY HH:MM:SS form', {_value(1)})"),
    ("ts_utc < $earliest OR ts_utc > $latest", "timestamp_out_of_range", "timestamp",
     "format('timestamp {} (UTC {}) is outside {} .. {}', " + _value(1) + ", ts_utc, $earliest, $latest)"),
    *_required(2, "event_id", _ID_TYPES),
    ("json_type(j[3]) IS NULL OR json_type(j[3]) = 'NULL'", "missing_field", "user",
     "'field user is missing or null'"),
    ("json_type(j[3]) <> 'OBJECT'", "wrong_type", "user",
     "format('field user is {}, expected an object: {}', lower(json_type(j[3])), left(j[3]::VARCHAR, 200))"),
    *_required(4, "user.id", _ID_TYPES),
    *_optional(5, "user.session_id", _ID_TYPES),
    *_optional(6, "user.ip", _STRING),
    *_required(7, "action", _STRING),
    ("json_type(j[8]) IS NULL OR json_type(j[8]) = 'NULL'", "missing_field", "url",
     "'field url is missing or null'"),
    ("json_type(j[8]) <> 'VARCHAR'", "wrong_type", "url",
     "format('field url is {}, expected a string: {}', lower(json_type(j[8])), left(j[8]::VARCHAR, 200))"),
]


def _case(column: int) -> str:
    """A CASE expression giving, for the first failing rule, its reason (1), field (2) or message (3)."""
    def result(rule: tuple[str, str, str, str]) -> str:
        return f"'{rule[column]}'" if column in (1, 2) else rule[column]

    return "CASE " + " ".join(f"WHEN {rule[0]} THEN {result(rule)}" for rule in _RULES) + " END"


_CLASSIFY_SQL = f"""
WITH lines AS (
    SELECT source_file, line_number, read_error, raw_excerpt,
           rtrim(line, chr(13)) AS text
    FROM batch
), framed AS (
    SELECT *,
        CASE
            WHEN read_error IS NOT NULL THEN read_error
            WHEN strlen(text) > $max_line_bytes THEN 'line_too_long'
            WHEN regexp_full_match(text, '\\s*') THEN 'blank_line'
            WHEN NOT json_valid(text) THEN 'invalid_json'
            WHEN json_type(text) <> 'OBJECT' THEN 'not_an_object'
        END AS line_reason
    FROM lines
), fields AS (
    SELECT *,
        CASE WHEN line_reason IS NULL
             THEN json_extract(text, {[f'$.{f}' for f in _FIELDS]!r}) END AS j
    FROM framed
), times AS (
    SELECT *,
        try_strptime(CASE WHEN json_type(j[1]) = 'VARCHAR' THEN trim({_value(1)}) END,
                     '{TIMESTAMP_FORMAT}') AS ts_local
    FROM fields
), utc AS (
    SELECT *, timezone('UTC', timezone($tz, ts_local)) AS ts_utc FROM times
)
SELECT
    source_file,
    line_number,
    {_value(2)} AS event_id,
    {_value(4)} AS user_id,
    CASE WHEN json_type(j[5]) <> 'NULL' THEN {_value(5)} END AS session_id,
    CASE WHEN json_type(j[6]) <> 'NULL' THEN {_value(6)} END AS ip,
    {_value(7)} AS action,
    {_value(8)} AS url,
    {_value(1)} AS timestamp_text,
    ts_utc AS time_stamp,
    coalesce(line_reason, {_case(1)}) AS reason,
    CASE WHEN line_reason IS NULL THEN {_case(2)} END AS field,
    CASE line_reason
        WHEN 'invalid_encoding' THEN 'the line is not valid UTF-8'
        WHEN 'line_too_long' THEN format('the line has {{}} bytes, more than the limit of {{}}', strlen(text), $max_line_bytes)
        WHEN 'blank_line' THEN 'the line is blank'
        WHEN 'invalid_json' THEN CASE WHEN trim(text) = '[' AND line_number = 1
            THEN 'the line is not valid JSON: [ (the file looks like one JSON array document; the source must be JSON Lines, one event object per line)'
            ELSE format('the line is not valid JSON: {{}}', left(text, 80)) END
        WHEN 'not_an_object' THEN format('the line is a JSON {{}}, not an object', json_type(text))
        ELSE {_case(3)}
    END AS message,
    left(coalesce(text, raw_excerpt), {RAW_LINE_LIMIT}) AS raw_line,
    coalesce(strlen(text), strlen(raw_excerpt)) AS raw_bytes
FROM utc
"""

_URL_SQL = """
SELECT c.* REPLACE (
    CASE WHEN c.reason IS NULL AND u.url_error IS NOT NULL THEN 'bad_url' ELSE c.reason END AS reason,
    CASE WHEN c.reason IS NULL AND u.url_error IS NOT NULL THEN 'url' ELSE c.field END AS field,
    CASE WHEN c.reason IS NULL AND u.url_error IS NOT NULL THEN u.url_error ELSE c.message END AS message
)
FROM classified c LEFT JOIN url_map u ON c.reason IS NULL AND c.url = u.url
"""


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for transformations, with a fixed UTC session time zone."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def iter_classified(
    paths: Sequence[Path], settings: ValidationSettings, con: duckdb.DuckDBPyConnection
) -> Iterator[pa.Table]:
    """Yield, per batch of source lines, one row per line with its typed fields and verdict.

    Columns: the ``EVENT_COLUMNS`` of raw_events, then ``reason``, ``field``, ``message``,
    ``raw_line`` and ``raw_bytes`` (NULL ``reason`` = the line is an event). ``time_stamp`` is the
    event time in UTC (naive TIMESTAMP) whenever the timestamp could be parsed, even on rejects.
    """
    params = {
        "tz": settings.source_timezone,
        "earliest": settings.earliest,
        "latest": settings.latest(),
        "max_line_bytes": settings.max_line_bytes,
    }
    for batch in iter_line_batches(paths, settings.chunk_bytes):
        con.register("batch", batch)
        classified = con.sql(_CLASSIFY_SQL, params=params).to_arrow_table()
        con.unregister("batch")
        urls = pc.filter(classified["url"], pc.is_null(classified["reason"]))
        url_map = split_urls(pd.Series(urls.to_pandas(), dtype="object"))
        con.register("classified", classified)
        con.register("url_map", url_map)
        yield con.sql(_URL_SQL).to_arrow_table()
        con.unregister("classified")
        con.unregister("url_map")
