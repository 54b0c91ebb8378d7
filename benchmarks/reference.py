"""(b) The reference implementation, written the way typical solutions are: one ``json.loads``
per line, ``urllib.parse`` and ``datetime.strptime`` per event, a list of rows into pandas, and
a pandas ``groupby`` for the hourly aggregate.

It applies the data contract's rules (shared/spec/data_contract.md) that decide which lines
become events and what their columns are, independently of the pipeline's code:

- a line is an event when it is a JSON object with: ``timestamp`` a string that parses as
  ``DD/MM/YYYY HH:MM:SS`` (UTC) between 2017-01-01 and now + 1 day; ``event_id`` and ``user.id``
  non-empty strings or integers; ``user`` an object; ``user.session_id`` string/integer or
  absent/null; ``user.ip`` string or absent/null; ``action`` a non-empty string; ``url`` a string
  with an http(s) scheme (or none) whose host has a registrable domain (Public Suffix List);
- duplicates (same event_id in the same UTC hour) keep the first line;
- outputs: ``event_table.csv`` and ``hourly_activity.csv`` with the contract's columns, sorted.

Usage: ``python -m benchmarks.reference SOURCE_FILE OUTPUT_DIR``
"""

from __future__ import annotations

import csv
import gzip
import ipaddress
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
from publicsuffixlist import PublicSuffixList

EARLIEST = datetime(2017, 1, 1)
_PSL = PublicSuffixList()


def _is_id(value: object) -> bool:
    """A string or an integer (not a bool, not a float)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def url_levels(url: str) -> tuple[str, str | None, str | None] | None:
    """(url_level1, url_level2, url_level3) of a URL, or None when it is not a usable web URL."""
    text = url.strip()
    if not text:
        return None
    if "://" not in text:
        text = "http://" + text.lstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    host = (host or "").rstrip(".")
    if not host or ".." in host or any(ch.isspace() for ch in host):
        return None
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    domain = _PSL.privatesuffix(host)
    if domain is None:
        return None
    segments = [s for s in parts.path.split("/") if s]
    return domain, (segments[0] if segments else None), (segments[1] if len(segments) > 1 else None)


def parse_line(line: str, latest: datetime) -> tuple | None:
    """One source line -> (user_id, time_stamp, l1, l2, l3, activity, event_id), or None when rejected."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    stamp, event_id, user = event.get("timestamp"), event.get("event_id"), event.get("user")
    action, url = event.get("action"), event.get("url")
    if not isinstance(stamp, str) or not _is_id(event_id) or not isinstance(user, dict):
        return None
    try:
        time_stamp = datetime.strptime(stamp.strip(), "%d/%m/%Y %H:%M:%S")
    except ValueError:
        return None
    if time_stamp < EARLIEST or time_stamp > latest:
        return None
    user_id, session_id, ip = user.get("id"), user.get("session_id"), user.get("ip")
    if not _is_id(user_id) or not (session_id is None or _is_id(session_id)) or not (ip is None or isinstance(ip, str)):
        return None
    if not isinstance(action, str) or not action.strip(" ") or not isinstance(url, str):
        return None
    if not str(event_id).strip(" ") or not str(user_id).strip(" "):
        return None
    levels = url_levels(url)
    if levels is None:
        return None
    return (str(user_id), time_stamp, *levels, action.strip(" "), str(event_id))


def run(source: Path, output_dir: Path) -> tuple[int, int]:
    """Write ``event_table.csv`` and ``hourly_activity.csv`` for ``source``; return their row counts."""
    latest = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)
    rows = []
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8", newline="\n") as handle:
        for line in handle:
            row = parse_line(line.removeprefix("\ufeff"), latest)
            if row is not None:
                rows.append(row)
    columns = ["user_id", "time_stamp", "url_level1", "url_level2", "url_level3", "activity", "event_id"]
    events = pd.DataFrame(rows, columns=columns)
    del rows
    events["hour"] = events["time_stamp"].dt.floor("h")
    events = events.drop_duplicates(["event_id", "hour"], keep="first")  # file order = line order
    events = events.sort_values(["time_stamp", "event_id"], kind="stable")
    hourly = (
        events.assign(time_bucket=events["hour"].dt.strftime("%Y%m%d%H"))
        .groupby(["time_bucket", "url_level1", "url_level2", "activity"], dropna=False)
        .agg(activity_count=("event_id", "size"), user_count=("user_id", "nunique"))
        .reset_index()
    )
    events["time_stamp"] = events["time_stamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    output_dir.mkdir(parents=True, exist_ok=True)
    events[columns].to_csv(output_dir / "event_table.csv", index=False, lineterminator="\r\n",
                           quoting=csv.QUOTE_MINIMAL)
    hourly.to_csv(output_dir / "hourly_activity.csv", index=False, lineterminator="\r\n",
                  quoting=csv.QUOTE_MINIMAL)
    return len(events), len(hourly)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.reference SOURCE OUTPUT_DIR``."""
    source, output_dir = (argv if argv is not None else sys.argv[1:])
    events, hourly = run(Path(source), Path(output_dir))
    print(f"reference: {events} events, {hourly} hourly rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
