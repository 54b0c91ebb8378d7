"""Landing: source files -> the rows of ``landed_lines``, every line once, with DuckDB SQL.

A :class:`FileLander` reads a list of files once (small files gathered into one batch, see
:mod:`hipages_pipeline.lib.events.reader`), classifies each line (:mod:`..events.validation`) and
streams one row per line as Arrow record batches: an event (``reason`` NULL) or a quarantine row,
with the UTC ``hour`` it belongs to (NULL when it has no usable event time). It counts the lines
of each file on the way, for the accounting ``lines = events + rejected`` per file.

The hourly tables are then selected from the stored rows (:func:`raw_events_sql`,
:func:`rejected_events_sql`, :func:`rejected_without_hour_sql`): no hourly run reads a source file.

All timestamps are naive values in UTC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from hipages_pipeline.lib.contract import LANDED_LINES, RAW_EVENTS, REJECTED_EVENTS
from hipages_pipeline.lib.events.reader import read_ahead
from hipages_pipeline.lib.events.validation import UNPLACED_SQL, ValidationSettings, classify_batches, new_connection

LANDED_SCHEMA = pa.schema([f for f in LANDED_LINES.arrow_schema() if f.name != "landed_at"])
"""What the lander streams: ``landed_lines`` without ``landed_at`` (the landing run adds it)."""

_LANDED_SQL = f"""
SELECT {', '.join(RAW_EVENTS.column_names[:-1])}, time_stamp,
    CASE WHEN {UNPLACED_SQL} THEN NULL ELSE date_trunc('hour', time_stamp) END AS hour,
    coalesce(ambiguous_time, false) AS ambiguous_time,
    reason, field, raw_line, message, raw_bytes
FROM judged
"""


class FileLander:
    """One pass over ``paths``: every line as a row of ``landed_lines`` (see the module docstring).

    Attributes (complete once :meth:`rows` is consumed):
        lines_per_file: lines read per file path (blank and undecodable lines included; a file
            with no line is absent).

    Raises (while iterating):
        SourceReadError: a file cannot be read (see :mod:`hipages_pipeline.lib.events.reader`).
    """

    def __init__(self, paths: Sequence[Path], settings: ValidationSettings, threads: int | None = None) -> None:
        self.paths, self.settings, self.threads = paths, settings, threads
        self.lines_per_file: Counter[str] = Counter()

    def rows(self) -> Iterator[pa.RecordBatch]:
        """The rows, batch by batch (consume once)."""
        con = new_connection(self.threads)
        try:
            for _ in classify_batches(self.paths, self.settings, con):
                for path, lines in con.execute("SELECT source_file::VARCHAR, count(*) FROM batch GROUP BY 1").fetchall():
                    self.lines_per_file[path] += lines
                yield from con.execute(_LANDED_SQL).to_arrow_table().cast(LANDED_SCHEMA).to_batches()
        finally:
            con.close()

    def reader(self) -> pa.RecordBatchReader:
        """:meth:`rows` as a record-batch reader (what DuckDB scans), classified in a background
        thread one chunk ahead, so that classifying the next chunk overlaps storing this one."""
        return pa.RecordBatchReader.from_batches(LANDED_SCHEMA, read_ahead(self.rows()))


def raw_events_sql(landed: str) -> str:
    """The SELECT of ``raw_events`` of the hours [$start, $end) from the table ``landed``."""
    return (f"SELECT {', '.join(RAW_EVENTS.column_names)} FROM {landed} "
            "WHERE reason IS NULL AND hour >= $start AND hour < $end")


def rejected_events_sql(landed: str) -> str:
    """The SELECT of ``rejected_events`` of the hours [$start, $end) from the table ``landed``
    (``rejected_at`` is the landing's time)."""
    return (f"SELECT {_reject_columns()} FROM {landed} "
            "WHERE reason IS NOT NULL AND hour >= $start AND hour < $end")


def rejected_without_hour_sql(landed: str) -> str:
    """The SELECT of ``rejected_without_hour`` (every landed line with no hour) from ``landed``."""
    return f"SELECT {_reject_columns()} FROM {landed} WHERE hour IS NULL"


def _reject_columns() -> str:
    return ", ".join("landed_at AS rejected_at" if name == "rejected_at" else name
                     for name in REJECTED_EVENTS.column_names)


def hour_stats_sql(landed: str) -> str:
    """Per UTC hour of [$start, $end) with landed lines: ``hour``, ``lines``, ``rejected``,
    ``ambiguous`` (lines with an ambiguous local time) and ``reasons`` (a MAP reason -> lines)."""
    return f"""
SELECT hour, count(*) AS lines, count(reason) AS rejected, count(*) FILTER (WHERE ambiguous_time) AS ambiguous,
       histogram(reason) FILTER (WHERE reason IS NOT NULL) AS reasons
FROM {landed} WHERE hour >= $start AND hour < $end GROUP BY hour ORDER BY hour
"""
