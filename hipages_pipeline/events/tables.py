"""The contract's tables, computed from source files with DuckDB SQL (vectorised, no per-event loop).

- :func:`scan_window`      source files -> raw events, quarantine rows and line accounting of a time
                           window (the grain of the raw and quarantine tables is one source line);
- :func:`source_hours`     which UTC hours occur in the source, with their line counts;
- :func:`clean_events`     raw events -> cleaned events (one row per event) + duplicate lines;
- :func:`hourly_activity`  cleaned events -> the hourly aggregate;
- :func:`event_table`      cleaned events -> the event table CSV's columns, sorted.

All timestamps are naive ``datetime64`` values in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hipages_pipeline.events.ips import anonymise_ips
from hipages_pipeline.events.urls import split_urls
from hipages_pipeline.events.validation import (
    EVENT_COLUMNS,
    REJECT_COLUMNS,
    ValidationSettings,
    iter_classified,
    new_connection,
)

KNOWN_ACTIVITIES = ("page_view", "button_click", "list_directory", "claim")

CLEANED_COLUMNS = [
    "event_id", "user_id", "session_id", "time_stamp", "url_level1", "url_level2", "url_level3",
    "activity", "ip_anonymised", "ip_valid", "source_file", "line_number",
]
DUPLICATE_COLUMNS = [
    "event_id", "time_stamp", "duplicate_kind", "source_file", "line_number", "kept_source_file",
    "kept_line_number",
]
EVENT_TABLE_COLUMNS = [
    "user_id", "time_stamp", "url_level1", "url_level2", "url_level3", "activity", "event_id",
]
HOURLY_COLUMNS = [
    "time_bucket", "url_level1", "url_level2", "activity", "activity_count", "user_count",
]


# DuckDB types of the frames passed between steps: an empty pandas frame carries no types, so
# frames are registered through typed views (see _register_typed).
RAW_TYPES = {"source_file": "VARCHAR", "line_number": "BIGINT", "event_id": "VARCHAR", "user_id": "VARCHAR",
             "session_id": "VARCHAR", "ip": "VARCHAR", "action": "VARCHAR", "url": "VARCHAR",
             "timestamp_text": "VARCHAR", "time_stamp": "TIMESTAMP"}
CLEANED_TYPES = {"event_id": "VARCHAR", "user_id": "VARCHAR", "session_id": "VARCHAR", "time_stamp": "TIMESTAMP",
                 "url_level1": "VARCHAR", "url_level2": "VARCHAR", "url_level3": "VARCHAR", "activity": "VARCHAR",
                 "ip_anonymised": "VARCHAR", "ip_valid": "BOOLEAN", "source_file": "VARCHAR", "line_number": "BIGINT"}


def _register_typed(con, name: str, frame: pd.DataFrame, types: dict[str, str]) -> None:
    """Expose ``frame`` to SQL as view ``name`` with the given column types (frame may be empty)."""
    con.register(f"{name}_frame", frame)
    casts = ", ".join(f'CAST("{column}" AS {type_}) AS "{column}"' for column, type_ in types.items())
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {casts} FROM {name}_frame")


@dataclass
class WindowScan:
    """What a scan of the source files found for one time window [start, end) in UTC.

    events: raw_events rows in the window (``EVENT_COLUMNS``), duplicates included.
    rejects: quarantine rows whose event time is known and in the window (``REJECT_COLUMNS``).
    unplaced: quarantine rows that belong to no hour: no usable event time, or one out of range.
    lines_read: every line of every file (blank and undecodable lines included).
    lines_in_window: lines whose event time falls in the window, counted on their own (the
        ``lines_accounted`` check compares it with len(events) + len(rejects)).
    """

    events: pd.DataFrame
    rejects: pd.DataFrame
    unplaced: pd.DataFrame
    lines_read: int
    lines_in_window: int


def _unplaced_mask(batch: pa.Table) -> pa.ChunkedArray:
    rejected = pc.is_valid(batch["reason"])
    undated = pc.or_(pc.is_null(batch["time_stamp"]), pc.equal(batch["reason"], "timestamp_out_of_range"))
    return pc.and_(rejected, pc.fill_null(undated, True))


def scan_window(
    paths: Sequence[Path], settings: ValidationSettings, start: datetime, end: datetime
) -> WindowScan:
    """Read and validate every line of ``paths``; keep what belongs to [start, end) (UTC, naive).

    Raises:
        SourceReadError: a file cannot be read (see :mod:`hipages_pipeline.events.reader`).
    """
    con = new_connection()
    events, rejects, unplaced = [], [], []
    lines_read = lines_in_window = 0
    for batch in iter_classified(paths, settings, con):
        lines_read += batch.num_rows
        ts = batch["time_stamp"]
        in_window = pc.fill_null(
            pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type))),
            False,
        )
        placed = pc.invert(_unplaced_mask(batch))
        lines_in_window += pc.sum(pc.and_(in_window, placed).cast(pa.int64())).as_py() or 0
        accepted = pc.is_null(batch["reason"])
        events.append(batch.filter(pc.and_(in_window, accepted)).select(EVENT_COLUMNS))
        rejects.append(batch.filter(pc.and_(pc.and_(in_window, placed), pc.invert(accepted))).select(REJECT_COLUMNS))
        unplaced.append(batch.filter(pc.invert(placed)).select(REJECT_COLUMNS))
    frames = [_concat(t, cols) for t, cols in ((events, EVENT_COLUMNS), (rejects, REJECT_COLUMNS), (unplaced, REJECT_COLUMNS))]
    return WindowScan(frames[0], frames[1], frames[2], lines_read, lines_in_window)


def _concat(tables: list[pa.Table], columns: list[str]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    frame = pa.concat_tables(tables).to_pandas()
    return frame.astype({c: "object" for c in columns if frame[c].dtype == "string"})


def scan_unplaced(paths: Sequence[Path], settings: ValidationSettings) -> tuple[pd.DataFrame, int]:
    """The quarantine rows of lines that belong to no hour (``REJECT_COLUMNS``), and lines read.

    Only the line and its timestamp are judged (the rules that decide a line's hour come first,
    so the verdict is the one :func:`scan_window` would give), which makes this scan cheap.
    """
    con = new_connection()
    unplaced, lines_read = [], 0
    for batch in iter_classified(paths, settings, con, full=False):
        lines_read += batch.num_rows
        unplaced.append(batch.filter(_unplaced_mask(batch)).select(REJECT_COLUMNS))
    return _concat(unplaced, REJECT_COLUMNS), lines_read


def source_hours(paths: Sequence[Path], settings: ValidationSettings) -> pd.DataFrame:
    """The UTC hours that hold at least one placed line (event or dated reject).

    Returns columns ``hour`` (datetime64, UTC, truncated to the hour) and ``lines`` (int), sorted
    by hour, plus the attribute ``attrs['lines_read']`` with every line read.
    """
    con = new_connection()
    counts: dict[pd.Timestamp, int] = {}
    lines_read = 0
    for batch in iter_classified(paths, settings, con, full=False):
        lines_read += batch.num_rows
        placed = batch.filter(pc.invert(_unplaced_mask(batch)))
        con.register("placed", placed)
        for hour, lines in con.sql("SELECT date_trunc('hour', time_stamp), count(*) FROM placed GROUP BY 1").fetchall():
            counts[pd.Timestamp(hour)] = counts.get(pd.Timestamp(hour), 0) + lines
        con.unregister("placed")
    frame = pd.DataFrame(sorted(counts.items()), columns=["hour", "lines"])
    frame.attrs["lines_read"] = lines_read
    return frame


_CLEAN_SQL = """
WITH ranked AS (
    SELECT r.*,
        row_number() OVER w AS copy_number,
        first_value(source_file) OVER w AS kept_source_file,
        first_value(line_number) OVER w AS kept_line_number,
        first_value([user_id, session_id, ip, action, url, timestamp_text]) OVER w AS kept_payload
    FROM raw r
    WINDOW w AS (PARTITION BY event_id, date_trunc('hour', time_stamp) ORDER BY source_file, line_number)
)
SELECT ranked.*, u.url_level1, u.url_level2, u.url_level3, i.ip_anonymised, coalesce(i.ip_valid, false) AS ip_valid,
    CASE WHEN copy_number = 1 THEN NULL
         WHEN [ranked.user_id, ranked.session_id, ranked.ip, ranked.action, ranked.url, ranked.timestamp_text]
              IS NOT DISTINCT FROM kept_payload THEN 'retry'
         ELSE 'conflict' END AS duplicate_kind
FROM ranked
LEFT JOIN url_map u ON ranked.url = u.url
LEFT JOIN ip_map i ON ranked.ip = i.ip
"""


def clean_events(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn raw events into the contract's cleaned events, dropping duplicate lines.

    A duplicate is a second line with the same event_id in the same UTC hour (so that hour-by-hour
    and ranged runs agree). The first line (by source file, then line number) is kept. A copy with
    the same payload is a ``retry``; with any other payload a ``conflict``.

    Returns:
        (cleaned, duplicates): cleaned has ``CLEANED_COLUMNS`` (time_stamp UTC; activity is
        ``action`` trimmed; ip_anonymised is the /24 or /64 network, NULL when ip_valid is False);
        duplicates has ``DUPLICATE_COLUMNS``, one row per dropped line.
    """
    con = new_connection()
    _register_typed(con, "raw", raw, RAW_TYPES)
    con.register("url_map", split_urls(raw["url"]))
    con.register("ip_map", anonymise_ips(raw["ip"]))
    con.execute(f"CREATE TEMP VIEW joined AS {_CLEAN_SQL}")
    cleaned = con.sql(
        "SELECT event_id, user_id, session_id, time_stamp, url_level1, url_level2, url_level3, "
        "trim(action) AS activity, ip_anonymised, ip_valid, source_file, line_number "
        "FROM joined WHERE duplicate_kind IS NULL ORDER BY time_stamp, event_id"
    ).df()
    duplicates = con.sql(
        f"SELECT {', '.join(DUPLICATE_COLUMNS)} FROM joined WHERE duplicate_kind IS NOT NULL "
        "ORDER BY source_file, line_number"
    ).df()
    return cleaned, duplicates


def hourly_activity(cleaned: pd.DataFrame) -> pd.DataFrame:
    """Aggregate cleaned events to the grain (time_bucket, url_level1, url_level2, activity).

    Columns: time_bucket (str ``YYYYMMDDHH``, UTC hour), url_level1, url_level2 (str, may be
    NULL: NULL is its own group), activity (str), activity_count (int, events) and user_count
    (int, distinct user_id). Sorted by the grain columns, NULLs first.
    """
    con = new_connection()
    _register_typed(con, "cleaned", cleaned, CLEANED_TYPES)
    return con.sql(
        "SELECT strftime(time_stamp, '%Y%m%d%H') AS time_bucket, url_level1, url_level2, activity, "
        "count(*)::BIGINT AS activity_count, count(DISTINCT user_id)::BIGINT AS user_count "
        "FROM cleaned GROUP BY ALL ORDER BY ALL NULLS FIRST"
    ).df()


def event_table(cleaned: pd.DataFrame, with_bucket: bool = False) -> pd.DataFrame:
    """The event table's columns (``EVENT_TABLE_COLUMNS``), time_stamp as ISO 8601 UTC text
    (``2017-02-02T20:22:00Z``), sorted by time_stamp then event_id; with ``with_bucket`` also
    ``time_bucket`` (``YYYYMMDDHH``, the hour's file name) as the last column."""
    con = new_connection()
    _register_typed(con, "cleaned", cleaned, CLEANED_TYPES)
    bucket = ", strftime(time_stamp, '%Y%m%d%H') AS time_bucket" if with_bucket else ""
    return con.sql(
        "SELECT user_id, strftime(time_stamp, '%Y-%m-%dT%H:%M:%SZ') AS time_stamp, url_level1, "
        f"url_level2, url_level3, activity, event_id{bucket} FROM cleaned ORDER BY cleaned.time_stamp, event_id"
    ).df()
