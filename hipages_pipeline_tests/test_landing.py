"""The landing layer end to end through ``hipages-pipeline run`` (in process): every line landed
once per file (``landed_lines``, ``landed_files``), the hourly tables built from the landed rows,
and the command landing only new or changed files and building only the hours they touched.

Every expected value is counted by hand from the small files each test writes.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance

from hipages_pipeline.cli.runner import run_pipeline
from hipages_pipeline.cli.summary import RunSummary
from hipages_pipeline.defs.resources import EventSource
from hipages_pipeline_tests.conftest import land, query_db

ARTICLES = "https://www.hipages.com.au/articles"
CONNECT = "https://www.hipages.com.au/connect/x"
EVENT_HEADER = ["user_id", "time_stamp", "url_level1", "url_level2", "url_level3", "activity", "event_id"]
HOURLY_HEADER = ["time_bucket", "url_level1", "url_level2", "activity", "activity_count", "user_count"]


def line(event_id: str, stamp: str, user: int = 1, url: str = ARTICLES, action: str = "page_view") -> str:
    """One source line in the sample's format (``stamp``: DD/MM/YYYY HH:MM:SS)."""
    return json.dumps({"event_id": event_id, "user": {"session_id": "9", "id": user, "ip": "1.2.3.4"},
                       "action": action, "url": url, "timestamp": stamp})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return path


def rewrite(path: Path, lines: list[str]) -> None:
    """New content, with a modification time surely not the old one (coarse file-system clocks)."""
    old = path.stat().st_mtime_ns
    write(path, lines)
    os.utime(path, ns=(old + 10**10, old + 10**10))


def run(source: Path, out: Path, instance: DagsterInstance | None = None) -> tuple[RunSummary, list[str]]:
    """One ``hipages-pipeline run`` of the files ``source/*.json``: its summary and progress lines."""
    messages: list[str] = []
    summary = run_pipeline(EventSource(source_glob=str(source / "*.json")), str(out),
                           instance=instance or DagsterInstance.ephemeral(), progress=messages.append)
    return summary, messages


def rows(out: Path, sql: str) -> list[tuple]:
    return [tuple(row) for row in query_db(out, sql).itertuples(index=False)]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def landed_files(out: Path) -> dict[str, tuple]:
    """source_file name -> (lines, events, rejected, first_hour, last_hour)."""
    return {Path(f).name: (n, e, r, None if first is None else str(first), None if last is None else str(last))
            for f, n, e, r, first, last in rows(out, "SELECT source_file, lines, events, rejected, first_hour::VARCHAR, "
                                                      "last_hour::VARCHAR FROM {s}.landed_files ORDER BY 1")}


def event_ids(out: Path, table: str = "cleaned_events") -> list[str]:
    return sorted(query_db(out, f"SELECT event_id FROM {{s}}.{table}")["event_id"].tolist())


def hour(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H")


def all_tables(out: Path) -> dict[str, object]:
    """Every table of the database, every row (sorted), to compare two states."""
    names = query_db(out, "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
                          "ORDER BY 1")["t"].tolist()
    return {name: query_db(out, f"SELECT * FROM {name} ORDER BY ALL").to_dict("records") for name in names}


def csv_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.csv"))}


def test_landing_twice_is_idempotent_and_the_second_run_launches_nothing(tmp_path):
    """a: 3 events at 2017-02-02 20:xx and an invalid JSON line; b: 2 events at 21:xx and a blank
    line. The second run finds both files landed and both hours up to date: no run, same rows,
    same files; its accounting is still of the two files (7 = 5 + 0 + 2)."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    write(source / "a.json", [line("a1", "02/02/2017 20:01:00"), line("a2", "02/02/2017 20:02:00"),
                              "{not json", line("a3", "02/02/2017 20:03:00")])
    write(source / "b.json", [line("b1", "02/02/2017 21:01:00"), "", line("b2", "02/02/2017 21:02:00")])

    first, _ = run(source, out)
    assert first.ok and first.files == (2, 0)
    assert first.hours == [hour("2017-02-02 20"), hour("2017-02-02 21")]
    assert (first.lines_read, first.accepted, first.duplicates, first.rejected) == (7, 5, 0, 2)
    assert landed_files(out) == {"a.json": (4, 3, 1, "2017-02-02 20:00:00", "2017-02-02 20:00:00"),
                                 "b.json": (3, 2, 1, "2017-02-02 21:00:00", "2017-02-02 21:00:00")}
    assert query_db(out, "SELECT count(*) AS n FROM {s}.landed_lines")["n"].item() == 7
    assert event_ids(out) == ["a1", "a2", "a3", "b1", "b2"]
    assert rows(out, "SELECT reason, line_number FROM {s}.rejected_without_hour ORDER BY source_file") == [
        ("invalid_json", 3), ("blank_line", 2)]
    tables, files = all_tables(out), csv_files(out)
    assert {"analytics.landed_lines", "analytics.landed_files", "analytics.cleaned_events"} <= set(tables)

    second, messages = run(source, out)
    assert second.files == (0, 2)
    assert second.runs == 0 and second.hours == []
    assert any("nothing new" in message for message in messages), messages
    assert (second.lines_read, second.accepted, second.duplicates, second.rejected) == (7, 5, 0, 2)
    assert second.ok
    assert all_tables(out) == tables
    assert csv_files(out) == files


def test_a_changed_file_replaces_exactly_its_rows_and_rebuilds_the_hour_it_left(tmp_path):
    """a: a1, a2 at 20:00 and a3 at 22:00 (2017-02-02); b: b1 at 20:00; c: c1 at 21:00. a is
    rewritten with a5 at 20:00 and a4 at 23:00: hour 22 lost its only line. One instance for both
    runs (the landing range is cut to the changed file among the known partitions)."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    instance = DagsterInstance.ephemeral()
    write(source / "a.json", [line("a1", "02/02/2017 20:01:00"), line("a2", "02/02/2017 20:02:00"),
                              line("a3", "02/02/2017 22:03:00")])
    write(source / "b.json", [line("b1", "02/02/2017 20:30:00", user=2)])
    write(source / "c.json", [line("c1", "02/02/2017 21:30:00")])
    first, _ = run(source, out, instance)
    assert first.ok and first.files == (3, 0)
    assert first.hours == [hour("2017-02-02 20"), hour("2017-02-02 21"), hour("2017-02-02 22")]
    assert read_csv(out / "event_table" / "2017020222.csv")[1:] == [
        ["1", "2017-02-02T22:03:00Z", "hipages.com.au", "articles", "", "page_view", "a3"]]
    others = "SELECT * FROM {s}.landed_lines WHERE source_file NOT LIKE '%a.json' ORDER BY ALL"
    others_before = query_db(out, others)
    files_before = query_db(out, "SELECT * FROM {s}.landed_files WHERE source_file NOT LIKE '%a.json' ORDER BY ALL")

    rewrite(source / "a.json", [line("a5", "02/02/2017 20:05:00"), line("a4", "02/02/2017 23:04:00")])
    second, _ = run(source, out, instance)
    assert second.ok and second.files == (1, 2)
    # The hours of a's lines before (20, 22) and after (20, 23); 21 (only c) is not run again.
    assert second.hours == [hour("2017-02-02 20"), hour("2017-02-02 22"), hour("2017-02-02 23")]
    assert rows(out, "SELECT line_number, event_id, hour::VARCHAR FROM {s}.landed_lines "
                     "WHERE source_file LIKE '%a.json' ORDER BY 1") == [
        (1, "a5", "2017-02-02 20:00:00"), (2, "a4", "2017-02-02 23:00:00")]
    assert query_db(out, others).equals(others_before)
    assert query_db(out, "SELECT * FROM {s}.landed_files WHERE source_file NOT LIKE '%a.json' ORDER BY ALL").equals(
        files_before)
    assert landed_files(out)["a.json"] == (2, 2, 0, "2017-02-02 20:00:00", "2017-02-02 23:00:00")
    assert event_ids(out) == ["a4", "a5", "b1", "c1"]
    assert event_ids(out, "raw_events") == ["a4", "a5", "b1", "c1"]
    assert read_csv(out / "event_table" / "2017020222.csv") == [EVENT_HEADER]
    assert read_csv(out / "hourly_activity" / "2017020222.csv") == [HOURLY_HEADER]
    assert [r[6] for r in read_csv(out / "event_table" / "2017020220.csv")[1:]] == ["a5", "b1"]
    assert [r[6] for r in read_csv(out / "event_table.csv")[1:]] == ["a5", "b1", "c1", "a4"]
    assert read_csv(out / "hourly_activity.csv")[1:] == [
        ["2017020220", "hipages.com.au", "articles", "page_view", "2", "2"],
        ["2017020221", "hipages.com.au", "articles", "page_view", "1", "1"],
        ["2017020223", "hipages.com.au", "articles", "page_view", "1", "1"]]
    assert rows(out, "SELECT rows FROM {s}._materialized WHERE table_name = 'hourly_activity' "
                     "AND hour = '2017-02-02 22:00'") == [(0,)]
    assert (second.lines_read, second.accepted, second.duplicates, second.rejected) == (4, 4, 0, 0)


def test_a_file_that_left_the_glob_keeps_its_quarantine_rows_and_events(tmp_path):
    """a: 20 events and a bad URL at 2017-02-02 20:xx (1 of 21 lines rejected, under the 5% gate)
    and an invalid JSON line; b: one event at 21:00. a is deleted: the next run has nothing to do.
    Then c adds an event at 20:00: hour 20 is rebuilt and still holds a's 20 events and its
    bad_url row; rejected_without_hour (rebuilt by the landing) still holds a's line 22."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    a_lines = [line(f"a{i:02d}", f"02/02/2017 20:{i:02d}:00") for i in range(1, 21)]
    a_lines += [line("bad", "02/02/2017 20:30:00", url="ftp://x.com/a"), "{not json"]
    write(source / "a.json", a_lines)
    write(source / "b.json", [line("b1", "02/02/2017 21:00:00")])
    first, _ = run(source, out)
    assert first.ok and (first.lines_read, first.accepted, first.duplicates, first.rejected) == (23, 21, 0, 2)
    quarantine = ("SELECT regexp_extract(source_file, '[^/]+$') AS f, line_number, reason FROM {s}.%s ORDER BY ALL")
    assert rows(out, quarantine % "rejected_events") == [("a.json", 21, "bad_url")]
    assert rows(out, quarantine % "rejected_without_hour") == [("a.json", 22, "invalid_json")]
    # rejected_at is the landing time of the line's file (one value per landing of a file)
    landed_at = rows(out, "SELECT DISTINCT landed_at FROM {s}.landed_lines WHERE source_file LIKE '%a.json'")
    assert len(landed_at) == 1
    rejected_at = ("SELECT rejected_at FROM {s}.rejected_events UNION ALL "
                   "SELECT rejected_at FROM {s}.rejected_without_hour")
    assert rows(out, rejected_at) == landed_at * 2

    (source / "a.json").unlink()
    second, _ = run(source, out)
    assert second.runs == 0 and second.files == (0, 1)
    assert (second.lines_read, second.accepted, second.duplicates, second.rejected) == (1, 1, 0, 0)

    write(source / "c.json", [line("c1", "02/02/2017 20:45:00")])
    third, _ = run(source, out)
    assert third.ok and third.files == (1, 1)
    assert third.hours == [hour("2017-02-02 20")]
    assert rows(out, quarantine % "rejected_events") == [("a.json", 21, "bad_url")]
    assert rows(out, quarantine % "rejected_without_hour") == [("a.json", 22, "invalid_json")]
    assert event_ids(out) == sorted([f"a{i:02d}" for i in range(1, 21)] + ["b1", "c1"])
    assert rows(out, rejected_at) == landed_at * 2  # a was not landed again: its rows are as they were
    assert landed_files(out)["a.json"] == (22, 20, 2, "2017-02-02 20:00:00", "2017-02-02 20:00:00")
    whole = read_csv(out / "rejected_events.csv")
    assert [(Path(r[whole[0].index("source_file")]).name, r[whole[0].index("line_number")],
             r[whole[0].index("reason")]) for r in whole[1:]] == [
        ("a.json", "21", "bad_url"), ("a.json", "22", "invalid_json")]
    # The accounting is of the files the glob matches now: b and c.
    assert (third.lines_read, third.accepted, third.duplicates, third.rejected) == (2, 2, 0, 0)


def test_a_duplicate_across_two_files_keeps_the_first_file_s_line(tmp_path):
    """event_id d at 2017-02-02 20:10 in a (line 3) and in b (line 1, another action): the copy of
    a is kept (path order first, though b's line number is smaller); b's is a conflict naming a's
    file and line."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    a = write(source / "a.json", [line("x1", "02/02/2017 20:01:00"), line("x2", "02/02/2017 20:02:00"),
                                  line("d", "02/02/2017 20:10:00")])
    b = write(source / "b.json", [line("d", "02/02/2017 20:10:00", action="click"),
                                  line("b1", "02/02/2017 20:20:00")])
    summary, _ = run(source, out)
    assert summary.ok
    assert (summary.lines_read, summary.accepted, summary.duplicates, summary.rejected) == (5, 4, 1, 0)
    assert rows(out, "SELECT event_id, source_file, line_number, activity FROM {s}.cleaned_events ORDER BY ALL") == [
        ("b1", str(b), 2, "page_view"), ("d", str(a), 3, "page_view"),
        ("x1", str(a), 1, "page_view"), ("x2", str(a), 2, "page_view")]
    assert rows(out, "SELECT event_id, duplicate_kind, source_file, line_number, kept_source_file, kept_line_number "
                     "FROM {s}.duplicate_events") == [("d", "conflict", str(b), 1, str(a), 3)]
    assert read_csv(out / "hourly_activity.csv")[1:] == [
        ["2017020220", "hipages.com.au", "articles", "page_view", "4", "1"]]


def test_a_late_file_rebuilds_only_the_old_hour_it_touches(tmp_path):
    """a: a1, a2 (user 1) at 2017-02-02 20:xx and a3 at 2017-03-01 10:00. A late file adds l1
    (user 2, /connect) at 2017-02-02 20:40: only that hour runs again (one landing run, one
    hourly run, the whole files); the other hour's file is not rewritten."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    write(source / "a.json", [line("a1", "02/02/2017 20:01:00"), line("a2", "02/02/2017 20:02:00"),
                              line("a3", "01/03/2017 10:00:00")])
    first, _ = run(source, out)
    assert first.ok and first.hours == [hour("2017-02-02 20"), hour("2017-03-01 10")]
    assert read_csv(out / "hourly_activity" / "2017020220.csv")[1:] == [
        ["2017020220", "hipages.com.au", "articles", "page_view", "2", "1"]]
    untouched = out / "event_table" / "2017030110.csv"
    untouched_state = (untouched.read_bytes(), untouched.stat().st_mtime_ns)

    write(source / "late.json", [line("l1", "02/02/2017 20:40:00", user=2, url=CONNECT)])
    second, _ = run(source, out)
    assert second.ok and second.files == (1, 1)
    assert second.hours == [hour("2017-02-02 20")]
    assert second.runs == 3  # landing, the hour, the whole files
    assert read_csv(out / "hourly_activity" / "2017020220.csv")[1:] == [
        ["2017020220", "hipages.com.au", "articles", "page_view", "2", "1"],
        ["2017020220", "hipages.com.au", "connect", "page_view", "1", "1"]]
    assert rows(out, "SELECT url_level2, activity_count, user_count FROM {s}.hourly_activity "
                     "WHERE time_bucket = '2017020220' ORDER BY 1") == [("articles", 2, 1), ("connect", 1, 1)]
    assert [r[6] for r in read_csv(out / "event_table" / "2017020220.csv")[1:]] == ["a1", "a2", "l1"]
    assert (untouched.read_bytes(), untouched.stat().st_mtime_ns) == untouched_state
    assert [r[6] for r in read_csv(out / "event_table.csv")[1:]] == ["a1", "a2", "l1", "a3"]
    assert (second.lines_read, second.accepted, second.duplicates, second.rejected) == (4, 4, 0, 0)


def test_lines_without_an_hour_belong_to_their_file(tmp_path):
    """a: invalid JSON, an event at 2017-02-02 20:00, a blank line, an unreal date; b: a 1999 event
    (out of range: its time_stamp is kept) and an event at 21:00. Four lines have no hour; per
    file, lines = events + rejected."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    write(source / "a.json", ["{not json", line("a1", "02/02/2017 20:00:00"), "",
                              line("a2", "31/02/2017 20:22:00")])
    write(source / "b.json", [line("b1", "02/02/1999 20:22:00"), line("b2", "02/02/2017 21:00:00")])
    summary, _ = run(source, out)
    assert summary.ok
    assert (summary.lines_read, summary.accepted, summary.duplicates, summary.rejected) == (6, 2, 0, 4)
    assert rows(out, "SELECT regexp_extract(source_file, '[^/]+$'), line_number, hour::VARCHAR, reason "
                     "FROM {s}.landed_lines ORDER BY 1, 2") == [
        ("a.json", 1, None, "invalid_json"), ("a.json", 2, "2017-02-02 20:00:00", None),
        ("a.json", 3, None, "blank_line"), ("a.json", 4, None, "bad_timestamp"),
        ("b.json", 1, None, "timestamp_out_of_range"), ("b.json", 2, "2017-02-02 21:00:00", None)]
    assert rows(out, "SELECT regexp_extract(source_file, '[^/]+$'), line_number, reason, time_stamp::VARCHAR "
                     "FROM {s}.rejected_without_hour ORDER BY 1, 2") == [
        ("a.json", 1, "invalid_json", None), ("a.json", 3, "blank_line", None),
        ("a.json", 4, "bad_timestamp", None), ("b.json", 1, "timestamp_out_of_range", "1999-02-02 20:22:00")]
    assert query_db(out, "SELECT count(*) AS n FROM {s}.rejected_events")["n"].item() == 0
    assert landed_files(out) == {"a.json": (4, 1, 3, "2017-02-02 20:00:00", "2017-02-02 20:00:00"),
                                 "b.json": (2, 1, 1, "2017-02-02 21:00:00", "2017-02-02 21:00:00")}
    assert rows(out, "SELECT count(*) FROM {s}.landed_files WHERE lines <> events + rejected") == [(0,)]


def test_many_small_files_land_in_one_run_with_their_own_line_numbers(tmp_path):
    """50 files of 2 lines: line 1 an event at 2017-02-02 20:MM, line 2 an event at 21:MM, except
    files 07 and 23 whose line 2 is a bad URL (two different ones). All 50 files are one batch of
    the reader: each reject gets its own file's line and message (2 of 50 lines at 21:00: 4%)."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    bad = {7: "ftp://seven.example/x", 23: "ftp://twentythree.example/y"}
    texts = {}
    for i in range(50):
        second = line(f"f{i:02d}-2", f"02/02/2017 21:{i:02d}:00", url=bad.get(i, ARTICLES))
        texts[i] = second
        write(source / f"f{i:02d}.json", [line(f"f{i:02d}-1", f"02/02/2017 20:{i:02d}:00"), second])
    summary, messages = run(source, out)
    assert summary.ok and summary.files == (50, 0)
    assert any("landing 50 new or changed (0 unchanged) in 1 run(s)" in message for message in messages), messages
    assert summary.runs == 3  # one landing run, one ranged run (20:00 .. 21:00), the whole files
    assert (summary.lines_read, summary.accepted, summary.duplicates, summary.rejected) == (100, 98, 0, 2)
    per_file = rows(out, "SELECT regexp_extract(source_file, '[^/]+$') AS f, min(line_number), max(line_number), "
                         "count(*), count(reason) FROM {s}.landed_lines GROUP BY 1 ORDER BY 1")
    assert per_file == [(f"f{i:02d}.json", 1, 2, 2, int(i in bad)) for i in range(50)]
    assert rows(out, "SELECT count(*), sum(lines), sum(events), sum(rejected) FROM {s}.landed_files") == [
        (50, 100, 98, 2)]
    assert rows(out, "SELECT count(*) FROM {s}.landed_lines WHERE event_id <> "
                     "regexp_extract(source_file, 'f[0-9]+') || '-' || line_number") == [(0,)]
    rejected = rows(out, "SELECT regexp_extract(source_file, '[^/]+$'), line_number, reason, raw_line, message "
                         "FROM {s}.rejected_events ORDER BY 1")
    assert rejected == [
        ("f07.json", 2, "bad_url", texts[7], "url 'ftp://seven.example/x' has scheme 'ftp', expected http or https"),
        ("f23.json", 2, "bad_url", texts[23],
         "url 'ftp://twentythree.example/y' has scheme 'ftp', expected http or https")]
    assert len(event_ids(out)) == 98


@pytest.mark.parametrize("table, expected", [
    ("landed_lines", 500), ("landed_files", 1), ("rejected_without_hour", 0), ("cleaned_events", 500),
    ("hourly_activity", 28), ("user_sessions", 234)])
def test_the_sample_lands_in_one_file_and_gives_the_same_tables(sample_output, table, expected):
    assert query_db(sample_output, f"SELECT count(*) AS n FROM {{s}}.{table}")["n"].item() == expected


def test_the_sample_s_file_accounting(sample_output):
    assert rows(sample_output, "SELECT lines, events, rejected, first_hour::VARCHAR, last_hour::VARCHAR "
                               "FROM {s}.landed_files") == [(500, 500, 0, "2017-01-01 20:00:00", "2017-12-02 20:00:00")]


def test_the_lander_classifies_every_line_as_the_window_scanner_does(tmp_path):
    """The landing's rows of two files (one batch) against the scanner of the same files over all
    time: the same events, the same quarantine rows with an hour (rejected_events) and without
    (rejected_without_hour); lines counted per file."""
    from hipages_pipeline.lib.contract import RAW_EVENTS, REJECTED_EVENTS
    from hipages_pipeline.lib.sql.landing import LANDED_SCHEMA, FileLander
    from hipages_pipeline.lib.sql.scan import scan_window
    from hipages_pipeline_tests.test_validation import ALL_TIME, SETTINGS

    one = write(tmp_path / "one.json", [line("e1", "02/02/2017 20:22:00"), line("u1", "02/02/2017 20:23:00",
                                                                                url="ftp://one.example/a"),
                                        "{not json", "", line("o1", "02/02/1999 20:22:00"),
                                        line("t1", "31/02/2017 20:22:00")])
    two = write(tmp_path / "two.json", [line("e2", "02/02/2017 21:00:00"), line("u2", "02/02/2017 21:01:00",
                                                                                url="ftp://two.example/b")])
    lander = FileLander([one, two], SETTINGS)
    landed = pa_table_to_frame(lander.rows(), LANDED_SCHEMA)
    assert dict(lander.lines_per_file) == {str(one): 6, str(two): 2}
    assert [(Path(f).name, n, None if r != r else r, h == h) for f, n, r, h in
            landed[["source_file", "line_number", "reason", "hour"]].itertuples(index=False)] == [
        ("one.json", 1, None, True), ("one.json", 2, "bad_url", True), ("one.json", 3, "invalid_json", False),
        ("one.json", 4, "blank_line", False), ("one.json", 5, "timestamp_out_of_range", False),
        ("one.json", 6, "bad_timestamp", False), ("two.json", 1, None, True), ("two.json", 2, "bad_url", True)]

    scan = scan_window([one, two], SETTINGS, *ALL_TIME)
    reject_columns = [c for c in REJECTED_EVENTS.column_names if c != "rejected_at"]
    events = landed[landed["reason"].isna()][RAW_EVENTS.column_names]
    with_hour = landed[landed["reason"].notna() & landed["hour"].notna()][reject_columns]
    without_hour = landed[landed["reason"].notna() & landed["hour"].isna()][reject_columns]
    for mine, theirs in ((events, scan.events), (with_hour, scan.rejects), (without_hour, scan.unplaced)):
        assert _records(mine) == _records(theirs)
    assert len(events) == 2 and len(with_hour) == 2 and len(without_hour) == 4


def pa_table_to_frame(batches, schema):
    import pyarrow as pa

    return pa.Table.from_batches(list(batches), schema).to_pandas().sort_values(
        ["source_file", "line_number"]).reset_index(drop=True)


def _records(frame) -> list[dict]:
    """Rows sorted by file and line, missing values as None (NaN, NaT and None alike), whole floats
    as integers (a BIGINT column with NULLs comes back as floats)."""
    rows = frame.sort_values(["source_file", "line_number"]).astype(object).to_dict("records")
    return [{k: (None if v is None or v != v else str(int(v) if isinstance(v, float) and v.is_integer() else v))
             for k, v in row.items()} for row in rows]


def test_hours_landed_but_never_built_are_built_by_the_next_run(tmp_path):
    """The files are landed (a landing run alone, as if the command stopped after it, or a sensor
    landed them): the next run lands nothing and builds the two hours of the landed lines, in two
    ranged runs (not contiguous) and the whole files."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    write(source / "a.json", [line("a1", "02/02/2017 20:01:00"), line("a2", "03/02/2017 05:00:00")])
    assert land(source / "*.json", out).success
    summary, _ = run(source, out)
    assert summary.ok and summary.files == (0, 1)
    assert summary.hours == [hour("2017-02-02 20"), hour("2017-02-03 05")]
    assert summary.runs == 3
    assert event_ids(out) == ["a1", "a2"]
    assert [r[6] for r in read_csv(out / "event_table.csv")[1:]] == ["a1", "a2"]


def test_an_hour_a_changed_file_left_is_built_by_the_next_run_after_a_landing_alone(tmp_path):
    """a: a1 at 2017-02-02 20:01 and a2 at 22:02; b: b1 at 22:30. a is rewritten (a3 at 20:05) and
    landed alone (no hourly run after it). The next run lands nothing; it must rebuild 20:00 (newer
    landed lines) and 22:00, which lost a2 though b's line there is older than its last build."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    write(source / "a.json", [line("a1", "02/02/2017 20:01:00"), line("a2", "02/02/2017 22:02:00")])
    write(source / "b.json", [line("b1", "02/02/2017 22:30:00")])
    first, _ = run(source, out)
    assert first.ok and first.hours == [hour("2017-02-02 20"), hour("2017-02-02 22")]
    rewrite(source / "a.json", [line("a3", "02/02/2017 20:05:00")])
    assert land(source / "a.json", out).success
    second, _ = run(source, out)
    assert second.files == (0, 2)
    assert second.hours == [hour("2017-02-02 20"), hour("2017-02-02 22")]
    assert event_ids(out) == ["a3", "b1"]
    assert [r[6] for r in read_csv(out / "event_table" / "2017020222.csv")[1:]] == ["b1"]
    assert second.ok and (second.lines_read, second.accepted, second.duplicates, second.rejected) == (2, 2, 0, 0)


def test_the_landing_materialization_records_lines_events_rejected_and_hours(tmp_path):
    # 3 lines: an event at 20:22, a bad_url line at 21:05 (an hour, rejected), invalid JSON (no hour)
    source = tmp_path / "in.json"
    source.write_text(
        '{"event_id": "a", "timestamp": "02/02/2017 20:22:00", "url": "https://www.hipages.com.au/x", '
        '"action": "page_view", "user": {"id": 1, "ip": "1.2.3.4", "session_id": "s"}}\n'
        '{"event_id": "b", "timestamp": "02/02/2017 21:05:00", "url": "not a url", '
        '"action": "page_view", "user": {"id": 1, "ip": "1.2.3.4", "session_id": "s"}}\n'
        '{not json\n', encoding="utf-8")
    result = land(source, tmp_path / "out")
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["landed_files"]]
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    assert (metadata["files"], metadata["lines"], metadata["events"], metadata["rejected"]) == (1, 3, 1, 2)
    assert metadata["hours"] == ["2017-02-02-20:00..2017-02-02-21:00"] and metadata["hours_touched"] == 2
