"""Scanning the source: files -> raw events and quarantine rows with DuckDB SQL (vectorised, no per-event loop).

- :class:`WindowScanner`   source files -> raw events (streamed as Arrow batches), quarantine rows
                           and line accounting of a time window (the grain of the raw and
                           quarantine tables is one source line); :func:`scan_window` is the same
                           as pandas frames (tests, small data);
- :func:`scan_unplaced`    the light pass: lines without an hour, and the hours of the others;
The transformations that follow (duplicates, cleaned events, the hourly aggregate) are in
:mod:`hipages_pipeline.lib.sql.transforms`; column lists and Arrow schemas come from the contract.

All timestamps are naive values in UTC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hipages_pipeline.lib.contract import RAW_EVENTS, REJECTED_EVENTS
from hipages_pipeline.lib.events.reader import read_ahead
from hipages_pipeline.lib.events.validation import (
    EVENT_COLUMNS,
    REJECT_COLUMNS,
    UNPLACED_SQL,
    ValidationSettings,
    classify_batches,
    new_connection,
)

EVENT_SCHEMA = RAW_EVENTS.arrow_schema()
REJECT_SCHEMA = pa.schema([f for f in REJECTED_EVENTS.arrow_schema() if f.name in REJECT_COLUMNS])


class WindowScanner:
    """One pass over the source files, for the time window [start, end) (naive UTC).

    :meth:`events` streams the window's events (``EVENT_COLUMNS``, duplicates included) as Arrow
    record batches, so that they can be inserted into DuckDB without being held in memory; while
    they are read, the scanner collects:

    - ``rejects``: quarantine rows (``REJECT_COLUMNS``) whose event time is known and in the window;
    - ``unplaced``: quarantine rows that belong to no hour (no usable event time, or out of range),
      unless ``collect_unplaced`` is False (``rejected_without_hour`` has them);
    - ``lines_read``: every line of every file (blank and undecodable lines included);
    - ``lines_in_window``: lines whose event time falls in the window, counted on their own (the
      ``lines_accounted`` check compares it with events + rejects);
    - ``lines_per_hour``: the same, per UTC hour (``{hour: lines}``, hours with lines only), and
      :attr:`rejects_per_hour` the quarantine rows per hour: the quality gates are judged per hour,
      so that a ranged run gives the verdict of its hours run one by one;
    - ``ambiguous_per_hour``: of those lines, the ones whose local time happened twice in the
      source time zone (read as the earlier instant), per UTC hour (hours with some only).

    Quarantine rows are few (a blocking check fails a window above 5%), so they are kept in memory.

    Raises (while iterating):
        SourceReadError: a file cannot be read (see :mod:`hipages_pipeline.lib.events.reader`).
    """

    def __init__(self, paths: Sequence[Path], settings: ValidationSettings, start: datetime, end: datetime,
                 threads: int | None = None, collect_unplaced: bool = True) -> None:
        self.paths, self.settings, self.start, self.end, self.threads = paths, settings, start, end, threads
        self.collect_unplaced = collect_unplaced  # the streamed ingest leaves them to the light pass
        self.lines_read = self.lines_in_window = self.events_read = 0
        self.lines_per_hour: Counter[datetime] = Counter()
        self.ambiguous_per_hour: Counter[datetime] = Counter()
        self._rejects: list[pa.Table] = []
        self._unplaced: list[pa.Table] = []

    def events(self) -> Iterator[pa.RecordBatch]:
        """The window's events, batch by batch (consume once)."""
        con = new_connection(self.threads)
        params = {"start": self.start, "end": self.end}
        in_window = "time_stamp >= $start AND time_stamp < $end"
        try:
            for lines in classify_batches(self.paths, self.settings, con):
                self.lines_read += lines
                # Counted on its own, from the verdicts before the URL rule (a bad URL does not change
                # a line's hour): the lines_accounted check compares it with events + rejects.
                for hour, lines_in_hour, ambiguous in con.execute(
                        f"SELECT date_trunc('hour', time_stamp), count(*), count(*) FILTER (WHERE ambiguous_time) "
                        f"FROM classified WHERE {in_window} AND NOT ({UNPLACED_SQL}) GROUP BY 1", params).fetchall():
                    self.lines_per_hour[hour] += lines_in_hour
                    self.lines_in_window += lines_in_hour
                    if ambiguous:
                        self.ambiguous_per_hour[hour] += ambiguous
                rejected = con.execute(
                    f"SELECT {', '.join(REJECT_COLUMNS)}, {UNPLACED_SQL} AS unplaced, coalesce({in_window}, false) AS in_window "
                    "FROM judged WHERE reason IS NOT NULL", params).to_arrow_table()
                self._rejects.append(rejected.filter(pc.and_(pc.invert(rejected["unplaced"]), rejected["in_window"]))
                                     .select(REJECT_COLUMNS).cast(REJECT_SCHEMA))
                if self.collect_unplaced:
                    self._unplaced.append(rejected.filter(rejected["unplaced"]).select(REJECT_COLUMNS).cast(REJECT_SCHEMA))
                events = con.execute(
                    f"SELECT {', '.join(EVENT_COLUMNS)} FROM classified c "
                    "WHERE reason IS NULL AND time_stamp >= $start AND time_stamp < $end "
                    "AND url IN (SELECT url FROM url_map WHERE url_error IS NULL)", params).to_arrow_table()
                events = events.cast(EVENT_SCHEMA)
                self.events_read += events.num_rows
                yield from events.to_batches()
        finally:
            con.close()

    def event_reader(self) -> pa.RecordBatchReader:
        """:meth:`events` as a record-batch reader (what DuckDB scans), classified in a background
        thread one chunk ahead, so that classifying the next chunk overlaps storing this one."""
        return pa.RecordBatchReader.from_batches(EVENT_SCHEMA, read_ahead(self.events()))

    @property
    def rejects(self) -> pa.Table:
        return pa.concat_tables(self._rejects) if self._rejects else REJECT_SCHEMA.empty_table()

    @property
    def rejects_per_hour(self) -> dict[datetime, int]:
        """The window's quarantine rows per UTC hour (hours with rejects only)."""
        rejects = self.rejects
        if not rejects.num_rows:
            return {}
        hours = pc.floor_temporal(rejects["time_stamp"], unit="hour")
        counts = pc.value_counts(hours).to_pylist()
        return {row["values"]: row["counts"] for row in counts}

    @property
    def unplaced(self) -> pa.Table:
        return pa.concat_tables(self._unplaced) if self._unplaced else REJECT_SCHEMA.empty_table()


@dataclass
class WindowScan:
    """What a whole scan of the source files found for one time window (pandas, for tests and
    small data): the attributes of :class:`WindowScanner`, events as a frame."""

    events: pd.DataFrame
    rejects: pd.DataFrame
    unplaced: pd.DataFrame
    lines_read: int
    lines_in_window: int


def scan_window(
    paths: Sequence[Path], settings: ValidationSettings, start: datetime, end: datetime
) -> WindowScan:
    """Read and validate every line of ``paths``; keep what belongs to [start, end) (UTC, naive).

    Raises:
        SourceReadError: a file cannot be read (see :mod:`hipages_pipeline.lib.events.reader`).
    """
    scanner = WindowScanner(paths, settings, start, end)
    events = pa.Table.from_batches(list(scanner.events()), EVENT_SCHEMA)
    return WindowScan(_frame(events), _frame(scanner.rejects), _frame(scanner.unplaced),
                      scanner.lines_read, scanner.lines_in_window)


def _frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    return frame.astype({c: "object" for c in frame.columns if frame[c].dtype == "string"})


def scan_unplaced(paths: Sequence[Path], settings: ValidationSettings,
                  threads: int | None = None) -> tuple[pa.Table, pd.DataFrame, int]:
    """One light pass over the source: the lines that belong to no hour, and the hours of the others.

    Only the line and its timestamp are judged (the rules that decide a line's hour come first,
    so the verdict is the one a full scan gives).

    Returns:
        (unplaced, hours, lines_read): the quarantine rows of lines without a usable event time
        (``REJECT_COLUMNS``); the UTC hours that hold at least one placed line (event or dated
        reject), as columns ``hour`` (datetime64, truncated to the hour) and ``lines`` (int),
        sorted by hour; and every line read.
    """
    con = new_connection(threads)
    unplaced, counts, lines_read = [], {}, 0
    try:
        for lines in classify_batches(paths, settings, con, full=False):
            lines_read += lines
            unplaced.append(con.execute(f"SELECT {', '.join(REJECT_COLUMNS)} FROM classified WHERE {UNPLACED_SQL}")
                            .to_arrow_table().cast(REJECT_SCHEMA))
            for hour, count in con.execute(f"SELECT date_trunc('hour', time_stamp), count(*) FROM classified "
                                           f"WHERE NOT ({UNPLACED_SQL}) GROUP BY 1").fetchall():
                counts[hour] = counts.get(hour, 0) + count
    finally:
        con.close()
    hours_frame = pd.DataFrame({"hour": pd.Series(sorted(counts), dtype="datetime64[us]"),
                                "lines": pd.Series([counts[h] for h in sorted(counts)], dtype="int64")})
    return (pa.concat_tables(unplaced) if unplaced else REJECT_SCHEMA.empty_table()), hours_frame, lines_read

