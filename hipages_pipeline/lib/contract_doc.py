"""Render ``docs/data_contract.md`` from the contract (:mod:`hipages_pipeline.lib.contract`).

``python -m hipages_pipeline.lib.contract_doc > docs/data_contract.md`` (``make contract-doc``)
rewrites it; ``test_contract.py`` fails when the committed file differs from what this renders.
The tables, columns, reason codes and CSV layouts come from the contract; the prose rules below
are the project's decisions where the source is ambiguous.
"""

from __future__ import annotations

from hipages_pipeline.lib.contract import (
    EARLIEST_EVENT_TIME,
    ISO_TIME_FORMAT,
    KNOWN_ACTIVITIES,
    RAW_LINE_LIMIT,
    REASON_CODES,
    REJECTED_FILE,
    SOURCE_TIMESTAMP_FORMAT,
    TABLES,
    TIME_BUCKET_FORMAT,
    Table,
)

INTRO = f"""# Data contract

What the pipeline promises about every table it writes. This page is generated from
`hipages_pipeline/lib/contract.py` (`make contract-doc`); a test fails when the two disagree, so
edit the module, not this page.

## Input

JSON Lines files from the event receiver, one event per line, UTF-8 (a BOM and CRLF line ends are
accepted; `.gz` files are decompressed). An event is
`{{"event_id", "user": {{"id", "session_id", "ip"}}, "action", "url", "timestamp"}}`, with
`timestamp` written `{SOURCE_TIMESTAMP_FORMAT}` (day first) in the source time zone (default UTC).
Event times before {EARLIEST_EVENT_TIME:%Y-%m-%d} (the first hourly partition) or more than the
future tolerance (default 24 hours) after now are out of range.
"""

RULES = [
    ("user_id", "`user.id` as text: a JSON string or integer (the sample sends integers although its "
     "schema says string). `user.session_id` is not a user: it changes on every event."),
    ("session_id", "`user.session_id` as sent, NULL when absent; kept, never used to build sessions."),
    ("time_stamp", f"`timestamp` parsed day-first (`{SOURCE_TIMESTAMP_FORMAT}`: hipages is Australian, "
     "and both 02/04 and 04/02 occur, so the order cannot be inferred) in the source time zone, "
     f"stored as UTC; CSV files write `{ISO_TIME_FORMAT}`."),
    ("url_level1", "The registrable domain of the URL's host (Public Suffix List, offline), lower-case: "
     "`https://www.hipages.com.au/x`, `w3.hipages.com.au/x` and `hipages.com.au/x` all give "
     "`hipages.com.au`. A URL without a scheme is read as `http://`; other schemes are `bad_url`."),
    ("url_level2, url_level3", "The first and second non-empty path segments; the query string and "
     "fragment are not part of the path. NULL when absent."),
    ("activity", f"`action`, trimmed. Known: {', '.join(KNOWN_ACTIVITIES)}; others pass with a WARN check."),
    ("time_bucket", f"The UTC hour of time_stamp as `{TIME_BUCKET_FORMAT}` (`2017020220`)."),
    ("ip", "Validated and never written in the clear: IPv4 with the last octet zeroed, IPv6 as its "
     "/64 network, NULL when invalid (the sample has octets of 333); `ip_valid` says which."),
    ("duplicates", "A second line with the same event_id in the same UTC hour is a duplicate: the first "
     "by (source_file, line_number) is kept; the others go to `duplicate_events` as `retry` (same "
     "payload) or `conflict` (different payload)."),
    ("sessions", "One user's run of events on one registrable domain with no gap over 30 minutes "
     "(exactly 30 is the same session), cut at 24 hours from its start; stored in the hour it starts."),
]

ACCOUNTING = f"""## Nothing lost

Every source line ends in exactly one place: an event of `cleaned_events`, a row of
`duplicate_events`, or a quarantine row (`rejected_events` when its hour is known, else
`rejected_without_hour`) with its file, line number, reason code, the field at fault, a message
naming the value, the raw line (cut at {RAW_LINE_LIMIT} characters) and when it was rejected.
`lines read = accepted + duplicates + rejected` is checked on every run; re-materializing an hour
replaces its rows, never duplicates them. `{REJECTED_FILE}` holds the whole quarantine.

## CSV files

RFC 4180, UTF-8, a header row, `,` separator, CRLF record ends, NULL as an empty field, values
written verbatim. Times are ISO 8601 UTC, booleans `true`/`false`. Each table with a layout below
has one file per UTC hour, `<output_dir>/<directory>/<YYYYMMDDHH>.csv` (header only when the hour
has no rows), and the whole table, `<output_dir>/<directory>.csv`.

## Reference result on the sample

`data/source_event_data.json`: 500 lines, 500 events accepted, 0 duplicates, 0 rejected; 28
hourly rows, 234 sessions (147 bounces); e.g. the hourly row
`2017020220,hipages.com.au,articles,page_view,59,30`.
"""


def _table_section(table: Table) -> list[str]:
    lines = [f"### {table.name}", "", table.description, "",
             f"Grain: one row per ({', '.join(table.grain)}). Partitioning: {table.partitioning}.", "",
             "| column | type | NULL | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'never'} | {c.description} |"
              for c in table.columns]
    if table.csv is not None:
        lines += ["", f"CSV files: `{table.csv.directory}/<YYYYMMDDHH>.csv` and `{table.csv.whole_file}`; "
                  f"columns `{','.join(table.csv.columns)}`; rows ordered by "
                  f"`{table.csv.order_by.replace('t.', '')}`."]
    return lines + [""]


def render() -> str:
    """The whole page, as Markdown."""
    lines = [INTRO, "## Field rules", "", "| field | rule |", "| --- | --- |"]
    lines += [f"| {field} | {rule} |" for field, rule in RULES]
    lines += ["", "## Reason codes", "", "A line that cannot become an event is quarantined with one reason. "
              "The rules are tried in this order and the first that fails wins: the line itself (encoding, "
              "length, blank, JSON object), then `timestamp` (missing or wrong type, then its value), then "
              "the other fields (missing, then wrong type), then the URL. So a line with no `event_id` and an "
              "unparseable timestamp is `bad_timestamp`.", "", "| reason | when |", "| --- | --- |"]
    lines += [f"| `{code}` | {text} |" for code, text in REASON_CODES.items()]
    lines += ["", "## Tables", ""]
    for table in TABLES.values():
        lines += _table_section(table)
    return "\n".join(lines) + "\n" + ACCOUNTING


if __name__ == "__main__":
    print(render(), end="")
