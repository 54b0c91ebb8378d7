"""(c) The lower bound: the transformation as one DuckDB SQL script (``lower_bound.sql``).

DuckDB reads the file, parses each line's JSON once, checks types, parses each distinct URL with
regular expressions and the Public Suffix List (the rules file the ``publicsuffixlist`` package
ships, joined in SQL), drops duplicates with a window function and writes the two CSVs with
``COPY``. DuckDB's defaults (all cores, 80% of RAM) as a plain script would have them.

Usage: ``python -m benchmarks.duckdb_sql SOURCE_FILE OUTPUT_DIR``
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import publicsuffixlist

SCRIPT = Path(__file__).with_name("lower_bound.sql")
PSL_FILE = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat")


def render(source: Path, output_dir: Path) -> str:
    """The SQL script with its parameters filled in."""
    latest = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)
    quote = lambda path: str(path).replace("'", "''")  # noqa: E731
    return SCRIPT.read_text().format(
        source=quote(source), psl=quote(PSL_FILE), latest=latest.strftime("%Y-%m-%d %H:%M:%S"),
        event_table=quote(output_dir / "event_table.csv"), hourly=quote(output_dir / "hourly_activity.csv"),
    )


def run(source: Path, output_dir: Path) -> None:
    """Write ``event_table.csv`` and ``hourly_activity.csv`` for ``source`` with one SQL script."""
    output_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(render(source, output_dir))
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.duckdb_sql SOURCE OUTPUT_DIR``."""
    source, output_dir = (argv if argv is not None else sys.argv[1:])
    run(Path(source), Path(output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
