"""(c) The lower bound: the pipeline's work on one source file as one DuckDB SQL script (``lower_bound.sql``).

The script does what ``hipages-pipeline run`` does to the lines of one file, in plain DuckDB SQL:

- reads the file once, numbers its lines, parses each line's JSON once and judges it by the
  contract's rules in their order (the reason codes of ``hipages_pipeline.lib.contract``:
  line_too_long, blank_line, invalid_json, not_an_object, missing_field, wrong_type,
  bad_timestamp, timestamp_out_of_range, then bad_url);
- splits each distinct URL (scheme, host, path) and finds its registrable domain with the Public
  Suffix List (the rules file the ``publicsuffixlist`` package ships, joined in SQL);
- drops duplicates (same event_id in the same UTC hour: the first line in file order wins);
- builds the hourly aggregate and the sessions (30 minutes of inactivity per (user_id,
  url_level1), 24 hours at most; in buckets of users of about a million events each, as the
  pipeline does, so that the window functions stay within the memory limit);
- writes the four whole CSV files the pipeline writes: ``event_table.csv``,
  ``hourly_activity.csv``, ``user_sessions.csv`` and ``rejected_events.csv`` (the quarantine:
  lines with an hour, then the lines without one, with reason, field, message and raw line).

It runs with DuckDB's ``memory_limit`` at ``--memory-limit`` (default 1GB, the pipeline's default)
and DuckDB's default threads (all cores). What it does not do (the pipeline does): store the
tables in a database file, write one CSV file per hour, anonymise IPs, evaluate asset checks,
record anything in Dagster. It keeps the text of rejected lines and of lines whose URL does not start
with http(s)://, and reads the file a second time only when a bad URL is not among those (none on
the generated data). Invalid UTF-8 (``invalid_encoding``) stops DuckDB's
CSV reader instead of being quarantined, and a source time zone other than UTC is not supported.

Usage: ``python -m benchmarks.duckdb_sql SOURCE_FILE OUTPUT_DIR [--memory-limit 1GB]``
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import publicsuffixlist

SCRIPT = Path(__file__).with_name("lower_bound.sql")
PSL_FILE = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat")
OUTPUT_FILES = {"event_table": "event_table.csv", "hourly": "hourly_activity.csv",
                "sessions": "user_sessions.csv", "rejected": "rejected_events.csv"}
MAX_LINE_BYTES = 1024 * 1024
RAW_LINE_LIMIT = 2000


def render(source: Path, output_dir: Path, memory_limit: str = "1GB") -> str:
    """The SQL script with its parameters filled in."""
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    quote = lambda path: str(path).replace("'", "''")  # noqa: E731
    return SCRIPT.read_text().format(
        source=quote(source), psl=quote(PSL_FILE), latest=(now + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
        memory_limit=memory_limit, max_line_bytes=MAX_LINE_BYTES, raw_limit=RAW_LINE_LIMIT,
        rejected_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{key: quote(output_dir / name) for key, name in OUTPUT_FILES.items()},
    )


SESSION_BUCKET_EVENTS = 1_000_000
"""Events per bucket of users for the sessions (the pipeline's buckets hold about as many)."""


BLOCK = re.compile(r"^-- @(only-when|for-each-bucket)\b ?([a-z_]*):", re.MULTILINE)


def sections(script: str) -> list[tuple[str, str, str]]:
    """The script cut at its blocks ``-- @only-when TABLE: ...`` / ``-- @for-each-bucket: ...`` ..
    ``-- @end``: a list of (kind, table, sql) with kind ``always``, ``only-when`` (run when
    ``table`` has rows) or ``for-each-bucket`` (run once per bucket, see :func:`run`)."""
    parts: list[tuple[str, str, str]] = []
    rest = script
    while match := BLOCK.search(rest):
        before = rest[:match.start()]
        block, rest = rest[match.start():].split("-- @end", 1)
        parts += [("always", "", before), (match.group(1), match.group(2), block)]
    return [(kind, table, sql) for kind, table, sql in [*parts, ("always", "", rest)]
            if any(line.strip() and not line.lstrip().startswith("--") for line in sql.splitlines())]


def run(source: Path, output_dir: Path, memory_limit: str = "1GB") -> dict[str, int]:
    """Write the four CSV files for ``source`` with one SQL script; return rows per table and
    rejected lines per reason (``rejected:<reason>``). A ``for-each-bucket`` block runs once per
    bucket of users, ``@bucket@`` of ``@buckets@`` (one bucket per :data:`SESSION_BUCKET_EVENTS` events)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        for kind, table, sql in sections(render(source, output_dir, memory_limit)):
            if kind == "always" or (kind == "only-when" and con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]):
                con.execute(sql)
            elif kind == "for-each-bucket":
                buckets = max(1, -(-con.execute("SELECT count(*) FROM events").fetchone()[0] // SESSION_BUCKET_EVENTS))
                for bucket in range(buckets):
                    con.execute(sql.replace("@buckets@", str(buckets)).replace("@bucket@", str(bucket)))
        counts = {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                  for name in ("events", "duplicates", "sessions", "rejected")}
        counts |= {f"rejected:{reason}": n for reason, n in
                   con.execute("SELECT reason, count(*) FROM rejected GROUP BY ALL ORDER BY ALL").fetchall()}
    finally:
        con.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.duckdb_sql SOURCE OUTPUT_DIR [--memory-limit 1GB]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duckdb_sql", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB's memory_limit (default %(default)s)")
    args = parser.parse_args(argv)
    counts = run(args.source, args.output_dir, args.memory_limit)
    print("duckdb_sql: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
