"""Comparing the CSV files of two output directories, row by row and per reject reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

TABLES = ("event_table", "hourly_activity", "user_sessions", "rejected_events")
"""The whole CSV files every implementation writes (``<output_dir>/<table>.csv``)."""
REJECT_COLUMNS = ("time_stamp", "reason", "field", "raw_line", "raw_bytes")
"""The quarantine's columns compared: not ``message`` (each implementation words it) nor
``rejected_at`` (the run's time)."""
LINEAGE = ("source_file", "line_number")
"""Compared too when both sides read the same files (not when one read the lines split in parts)."""


@dataclass
class Comparison:
    """Two outputs of one table compared as multisets of text rows (``EXCEPT ALL`` both ways)."""

    table: str
    left: str
    right: str
    left_rows: int
    right_rows: int
    only_left: int
    only_right: int
    examples: list[str] = field(default_factory=list)
    columns: str = "all"
    reasons: dict[str, list[int]] = field(default_factory=dict)
    """rejected_events: reason -> [left count, right count]."""

    @property
    def same(self) -> bool:
        return (self.only_left == 0 and self.only_right == 0 and self.left_rows == self.right_rows
                and all(a == b for a, b in self.reasons.values()))


def _csv(path: Path) -> str:
    """The CSV file as a relation: every field as text, an empty field NULL."""
    quoted = str(path).replace("'", "''")
    return f"read_csv('{quoted}', all_varchar = true, header = true, delim = ',', quote = '\"', escape = '\"')"


def _expressions(table: str, columns: list[str], lineage: bool) -> list[str]:
    """The compared columns: all, or for rejected_events :data:`REJECT_COLUMNS` (+ :data:`LINEAGE`,
    ``source_file`` as its file name: each implementation may be given another path to the file)."""
    if table != "rejected_events":
        return [f'"{c}"' for c in columns]
    wanted = [c for c in (*(LINEAGE if lineage else ()), *REJECT_COLUMNS) if c in columns]
    return [f"regexp_extract(\"{c}\", '[^/]*$')" if c == "source_file" else f'"{c}"' for c in wanted]


def compare_table(con: duckdb.DuckDBPyConnection, table: str, left: tuple[str, Path], right: tuple[str, Path],
                  lineage: bool = True) -> Comparison:
    """Compare ``<table>.csv`` of the two directories (see :func:`compare_outputs`).

    Rows are compared by a 64-bit hash of their compared fields (so 10M rows fit in memory); rows
    that differ are then read back in full for the examples.
    """
    paths = [directory / f"{table}.csv" for _, directory in (left, right)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return Comparison(table, left[0], right[0], -1, -1, -1, -1, [f"missing: {', '.join(missing)}"])
    columns, other = ([c[0] for c in con.execute(f"SELECT * FROM {_csv(p)} LIMIT 0").description] for p in paths)
    if columns != other:
        return Comparison(table, left[0], right[0], -1, -1, -1, -1, [f"columns differ: {columns} vs {other}"])
    expressions = _expressions(table, columns, lineage)
    row_hash = f"hash({', '.join(expressions)})"
    for name, path in zip("lr", paths):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {row_hash} AS h FROM {_csv(path)}")
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in "lr"]
    only = [con.execute(f"SELECT count(*) FROM (SELECT h FROM {a} EXCEPT ALL SELECT h FROM {b})").fetchone()[0]
            for a, b in ("lr", "rl")]
    compared = "all" if table != "rejected_events" else ", ".join(c for c in (*LINEAGE, *REJECT_COLUMNS)
                                                                   if any(f'"{c}"' in e for e in expressions))
    result = Comparison(table, left[0], right[0], counts[0], counts[1], only[0], only[1], columns=compared)
    if table == "rejected_events" and "reason" in columns:
        for side, path in enumerate(paths):
            for reason, n in con.execute(f"SELECT reason, count(*) FROM {_csv(path)} GROUP BY ALL").fetchall():
                result.reasons.setdefault(reason, [0, 0])[side] = n
        result.reasons = dict(sorted(result.reasons.items()))
    for (name, _), path, (a, b), n in zip((left, right), paths, ("lr", "rl"), only):
        if n:
            result.examples += [f"only in {name}: {str(row)[:300]}" for row in con.execute(
                f"SELECT {', '.join(expressions)} FROM {_csv(path)} WHERE {row_hash} IN "
                f"(SELECT h FROM (SELECT h FROM {a} EXCEPT ALL SELECT h FROM {b})) LIMIT 3").fetchall()]
    return result


def compare_outputs(left: tuple[str, Path], right: tuple[str, Path], lineage: bool = True,
                    tables: tuple[str, ...] = TABLES, threads: int = 2) -> list[Comparison]:
    """Compare the whole CSV files of two output directories ``(label, directory)``.

    Every field is read as text (an empty field is NULL) and rows are compared as multisets, so
    row order and line endings do not matter. event_table, hourly_activity and user_sessions are
    compared on every column; rejected_events on :data:`REJECT_COLUMNS` (plus the file name and
    line number with ``lineage``), and its rows per reason are counted on both sides.
    """
    con = duckdb.connect(config={"threads": threads, "memory_limit": "2GB"})
    con.execute("SET enable_progress_bar = false")
    try:
        return [compare_table(con, table, left, right, lineage) for table in tables]
    finally:
        con.close()
