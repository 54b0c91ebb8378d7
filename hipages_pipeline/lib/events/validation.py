"""Validation: numbered source lines -> typed events or quarantine rows with a reason code.

Every line ends in exactly one of two places: a typed event (``raw_events``) or a quarantine row
(``rejected_events``). Parsing and type checks run in DuckDB SQL over whole batches (DuckDB's JSON
reader), URL checks once per distinct URL (:mod:`hipages_pipeline.lib.events.urls`): there is no
Python loop per event.

Reason codes (a fixed set; the first rule that fails wins: the line, then ``timestamp``, then the
other fields, then the URL):
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pandas as pd
import pyarrow as pa

from hipages_pipeline.lib.contract import (
    RAW_EVENTS,
    RAW_LINE_LIMIT,
    REASON_CODES,
    REJECTED_EVENTS,
)
from hipages_pipeline.lib.events.reader import DEFAULT_CHUNK_BYTES, iter_line_batches
from hipages_pipeline.lib.events.rules_sql import CLASSIFY_SQL, TIME_ONLY_SQL
from hipages_pipeline.lib.events.urls import split_urls

__doc__ = (__doc__ or "") + "\n".join(f"- ``{code}``: {text}" for code, text in REASON_CODES.items())


EVENT_COLUMNS = RAW_EVENTS.column_names
REJECT_COLUMNS = [c for c in REJECTED_EVENTS.column_names if c != "rejected_at"]
"""The quarantine row of a line (``rejected_at`` is added when it is stored)."""


def check_source_timezone(name: str) -> str:
    """``name`` when it is a known IANA time zone.

    Raises:
        ValueError: ``Unknown source time zone ...`` with zoneinfo's reason.
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"Unknown source time zone {name!r}: {exc}") from exc
    return name


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
    SELECT b.source_file, b.line_number,
           CASE WHEN ends_with(b.line, chr(13)) THEN rtrim(b.line, chr(13)) ELSE b.line END AS text
    FROM batch b SEMI JOIN (SELECT c.source_file, c.line_number FROM classified c JOIN url_map u ON c.url = u.url
                            WHERE {_BAD_URL}) k
        ON b.source_file = k.source_file AND b.line_number = k.line_number
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
LEFT JOIN bad_lines l ON c.source_file = l.source_file AND c.line_number = l.line_number
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
    sql = CLASSIFY_SQL if full else TIME_ONLY_SQL
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

    Columns: the ``EVENT_COLUMNS`` of raw_events, then ``ambiguous_time``, ``reason``, ``field``,
    ``message``, ``raw_line`` and ``raw_bytes`` (NULL ``reason`` = the line is an event).
    ``time_stamp`` is the event time in UTC (naive TIMESTAMP) whenever the timestamp could be
    parsed and exists in the source time zone, even on rejects; ``ambiguous_time`` is true when
    that local time happened twice there (clocks set back): ``time_stamp`` is then the earlier
    instant.

    With ``full=False`` only the line and its timestamp are judged (``reason`` NULL means "has a
    usable event time", not "is an event"), the event columns other than ``timestamp_text`` and
    ``time_stamp`` are absent, and no URL is parsed: enough to know each line's hour, and
    exactly the same verdict as the full check for lines without one.
    """
    for _ in classify_batches(paths, settings, con, full):
        yield con.sql("SELECT * FROM judged" if full else "SELECT * FROM classified").to_arrow_table()
