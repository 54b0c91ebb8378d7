"""user_sessions: the pure sessionization on small frames, the asset across hours, and docs/analyses.md.

Every expected value is worked out by hand from the events written in the test (times in UTC).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, Failure, build_asset_context

from hipages_pipeline.defs.io_manager import DuckDBQuery
from hipages_pipeline.defs.resources import DuckDBWarehouse, SessionRules, database_path
from hipages_pipeline.defs.sessions import assets as sessions_asset
from hipages_pipeline.defs.sessions.assets import user_sessions
from hipages_pipeline.defs.sessions.checks import session_check_results
from hipages_pipeline.lib.contract import USER_SESSIONS
from hipages_pipeline.lib.sql.sessions import (
    SESSION_COLUMNS,
    SessionSettings,
    session_id_of,
    sessionize,
    sessions_starting_in,
)
from hipages_pipeline.lib.storage.csv_files import copy_to_csv_atomic
from hipages_pipeline_tests.conftest import PROJECT_ROOT

ANALYSES = PROJECT_ROOT / "docs" / "analyses.md"
T = pd.Timestamp


# --------------------------------------------------------------------------- helpers

def frame(*events: tuple) -> pd.DataFrame:
    """Events as (time, activity, url_level2[, user_id[, url_level1[, event_id]]])."""
    rows = []
    for number, event in enumerate(events):
        time, activity, level2, user, domain, event_id = (*event, *("u1", "hipages.com.au", None)[len(event) - 3:])
        rows.append({"event_id": event_id or f"e{number:03d}", "user_id": user, "time_stamp": T(time),
                     "url_level1": domain, "url_level2": level2, "url_level3": None, "activity": activity})
    return pd.DataFrame(rows)


def spans(sessions: pd.DataFrame) -> list[tuple]:
    """(user_id, url_level1, start, end, duration_seconds, event_count) per session, as text."""
    return [(r.user_id, r.url_level1, str(r.session_start), str(r.session_end), r.duration_seconds, r.event_count)
            for r in sessions.itertuples()]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def jsonl(path: Path, *events: tuple) -> Path:
    """Write source lines like data/source_event_data.json: (event_id, user id, 'DD/MM/YYYY HH:MM:SS',
    action, url)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"event_id": event_id, "user": {"session_id": f"s{event_id}", "id": user, "ip": "1.2.3.4"},
                         "action": action, "url": url, "timestamp": when})
             for event_id, user, when, action, url in events]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored(query, out: Path) -> list[tuple]:
    """user_sessions in the database as (user_id, start, end, duration, events, bounce, converted)."""
    rows = query(out, "SELECT user_id, session_start, session_end, duration_seconds, event_count, is_bounce, "
                      "converted FROM {s}.user_sessions ORDER BY session_start, user_id")
    return [(r.user_id, str(r.session_start), str(r.session_end), r.duration_seconds, r.event_count,
             bool(r.is_bounce), bool(r.converted)) for r in rows.itertuples()]


def session_checks(result) -> dict[str, tuple[bool, AssetCheckSeverity]]:
    return {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()
            if e.asset_key.to_user_string() == "user_sessions"}


def all_session_checks_pass(result) -> bool:
    checks = session_checks(result)
    return len(checks) == 4 and all(passed for passed, _ in checks.values())


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


ARTICLES = "https://www.hipages.com.au/articles"
FIND = "https://www.hipages.com.au/find/electricians"
PHOTOS = "https://www.hipages.com.au/photos/bathrooms"
CONNECT = "https://www.hipages.com.au/connect/sfelectrics"


# --------------------------------------------------------------------------- the pure function

def test_session_crossing_an_hour_is_one_session_with_all_columns():
    sessions = sessionize(frame(("2017-02-02 20:50:00", "page_view", "articles"),
                                ("2017-02-02 21:05:00", "button_click", "connect"),
                                ("2017-02-02 21:10:00", "claim", "find")))
    assert list(sessions.columns) == SESSION_COLUMNS
    assert sessions.to_dict("records") == [{
        "session_id": md5("u1|hipages.com.au|2017-02-02T20:50:00.000000Z"),
        "user_id": "u1", "url_level1": "hipages.com.au",
        "session_start": T("2017-02-02 20:50:00"), "session_end": T("2017-02-02 21:10:00"),
        "duration_seconds": 1200, "event_count": 3, "page_view_count": 1, "button_click_count": 1,
        "list_directory_count": 0, "claim_count": 1, "other_count": 0,
        "landing_url_level2": "articles", "exit_url_level2": "find", "is_bounce": False, "converted": True,
    }]
    # Kept by the hour it starts in, whichever window of hours is asked for.
    assert len(sessions_starting_in(sessions, datetime(2017, 2, 2, 20), datetime(2017, 2, 2, 21))) == 1
    assert len(sessions_starting_in(sessions, datetime(2017, 2, 2, 21), datetime(2017, 2, 2, 22))) == 0


def test_session_crossing_midnight():
    sessions = sessionize(frame(("2017-03-31 23:45:00", "list_directory", "find"),
                                ("2017-04-01 00:10:00", "page_view", "connect"),
                                ("2017-04-01 00:30:00", "page_view", "articles")))
    # 23:45 -> 00:30 is 45 minutes.
    assert spans(sessions) == [("u1", "hipages.com.au", "2017-03-31 23:45:00", "2017-04-01 00:30:00", 2700, 3)]


def test_thirty_minute_edge():
    sessions = sessionize(frame(("2017-02-02 10:00:00", "page_view", "articles"),
                                ("2017-02-02 10:30:00", "page_view", "articles"),    # exactly 1800 s: same
                                ("2017-02-02 11:00:01", "page_view", "articles")))   # 1801 s: new session
    assert spans(sessions) == [
        ("u1", "hipages.com.au", "2017-02-02 10:00:00", "2017-02-02 10:30:00", 1800, 2),
        ("u1", "hipages.com.au", "2017-02-02 11:00:01", "2017-02-02 11:00:01", 0, 1),
    ]
    assert sessions["is_bounce"].tolist() == [False, True]


def test_twenty_four_hour_cap():
    # One event every 30 minutes from 1 Mar 00:00 to 2 Mar 01:00: 51 events, never a gap over 30 min.
    times = pd.date_range("2017-03-01 00:00", "2017-03-02 01:00", freq="30min")
    sessions = sessionize(frame(*((t, "page_view", "articles") for t in times)))
    # The event at exactly start + 24 h (2 Mar 00:00) still belongs; 00:30 is past the cap.
    assert spans(sessions) == [
        ("u1", "hipages.com.au", "2017-03-01 00:00:00", "2017-03-02 00:00:00", 86400, 49),
        ("u1", "hipages.com.au", "2017-03-02 00:30:00", "2017-03-02 01:00:00", 1800, 2),
    ]


def test_cap_cuts_a_long_run_several_times():
    # Every 20 minutes 00:00 .. 03:00 with a one-hour cap: the cut is the first event past start + 1 h.
    times = pd.date_range("2017-03-01 00:00", "2017-03-01 03:00", freq="20min")
    rules = SessionSettings(max_session_seconds=3600)
    assert [s[2:] for s in spans(sessionize(frame(*((t, "page_view", None) for t in times)), rules))] == [
        ("2017-03-01 00:00:00", "2017-03-01 01:00:00", 3600, 4),
        ("2017-03-01 01:20:00", "2017-03-01 02:20:00", 3600, 4),
        ("2017-03-01 02:40:00", "2017-03-01 03:00:00", 1200, 2),
    ]


def test_sessions_per_domain_or_per_user():
    events = frame(("2017-02-02 10:00:00", "page_view", "articles", "u1", "hipages.com.au"),
                   ("2017-02-02 10:05:00", "page_view", "find", "u1", "petpages.com.au"),
                   ("2017-02-02 10:10:00", "claim", "connect", "u1", "hipages.com.au"),
                   ("2017-02-02 10:12:00", "page_view", "photos", "u2", "hipages.com.au"))
    per_domain = sessionize(events)
    assert spans(per_domain) == [
        ("u1", "hipages.com.au", "2017-02-02 10:00:00", "2017-02-02 10:10:00", 600, 2),
        ("u1", "petpages.com.au", "2017-02-02 10:05:00", "2017-02-02 10:05:00", 0, 1),
        ("u2", "hipages.com.au", "2017-02-02 10:12:00", "2017-02-02 10:12:00", 0, 1),
    ]
    per_user = sessionize(events, SessionSettings(per_domain=False))
    # One visit of u1 over both domains; url_level1 is the landing domain; the id has no domain.
    assert spans(per_user) == [
        ("u1", "hipages.com.au", "2017-02-02 10:00:00", "2017-02-02 10:10:00", 600, 3),
        ("u2", "hipages.com.au", "2017-02-02 10:12:00", "2017-02-02 10:12:00", 0, 1),
    ]
    assert per_user["session_id"][0] == md5("u1||2017-02-02T10:00:00.000000Z")
    assert per_user[["landing_url_level2", "exit_url_level2"]].values.tolist()[0] == ["articles", "connect"]


def test_ties_nulls_and_other_activities():
    # Three events in the same second: ordered by event_id, so 'a' lands and 'c' exits (url NULL).
    sessions = sessionize(frame(("2017-02-02 10:00:00", "page_view", "photos", "u1", "hipages.com.au", "b"),
                                ("2017-02-02 10:00:00", "share", "articles", "u1", "hipages.com.au", "a"),
                                ("2017-02-02 10:00:00", "claim", None, "u1", "hipages.com.au", "c")))
    row = sessions.to_dict("records")[0]
    assert (row["landing_url_level2"], row["exit_url_level2"]) == ("articles", None)
    assert (row["event_count"], row["page_view_count"], row["claim_count"], row["other_count"]) == (3, 1, 1, 1)
    assert (row["duration_seconds"], row["is_bounce"], row["converted"]) == (0, False, True)


def test_same_events_give_same_sessions_in_any_order():
    events = frame(("2017-02-02 10:00:00", "page_view", "articles", "u1"),
                   ("2017-02-02 10:40:00", "page_view", "find", "u1"),
                   ("2017-02-02 10:05:00", "page_view", "find", "u2"))
    first = sessionize(events)
    again = sessionize(events.sample(frac=1, random_state=7).reset_index(drop=True))
    pd.testing.assert_frame_equal(first, again)
    assert first["session_id"].tolist() == [
        session_id_of("u1", "hipages.com.au", datetime(2017, 2, 2, 10, 0)),
        session_id_of("u2", "hipages.com.au", datetime(2017, 2, 2, 10, 5)),
        session_id_of("u1", "hipages.com.au", datetime(2017, 2, 2, 10, 40)),
    ]


def test_bad_input_and_rules_raise():
    assert sessionize(frame().reindex(columns=["event_id"])).columns.tolist() == SESSION_COLUMNS
    with pytest.raises(ValueError, match="user_id"):
        sessionize(frame(("2017-02-02 10:00:00", "page_view", "x", None)))
    with pytest.raises(ValueError, match="lack"):
        sessionize(frame(("2017-02-02 10:00:00", "page_view", "x")).drop(columns="activity"))
    with pytest.raises(ValueError, match="inactivity_timeout_seconds"):
        SessionSettings(inactivity_timeout_seconds=0)
    with pytest.raises(Failure, match="max_session_seconds"):
        SessionRules(max_session_seconds=-1).settings()


def test_session_checks_catch_broken_sessions():
    events = frame(("2017-02-02 10:00:00", "page_view", "articles"), ("2017-02-02 10:10:00", "claim", "find"),
                   ("2017-02-02 12:00:00", "page_view", "photos"))
    good = sessionize(events)  # 10:00-10:10 (2 events) and 12:00 (1 event)
    window = (datetime(2017, 2, 1, 10), datetime(2017, 2, 3, 11))

    def failing(sessions: pd.DataFrame) -> set[str]:
        con = duckdb.connect()
        con.register("sessions", sessions)
        con.register("events", events)
        found = [{r.check_name for r in session_check_results(
                      con, "SELECT * FROM sessions", "SELECT * FROM sessions", "SELECT * FROM events",
                      window, datetime(2017, 1, 1), 86400, 1800, True, buckets) if not r.passed}
                 for buckets in (1, 3)]  # in buckets of users, the checks find the same
        assert found[0] == found[1]
        return found[0]

    assert failing(good) == set()
    assert failing(good.assign(event_count=[1, 1])) == {"event_count_reconciles", "duration_within_cap"}
    overlapping = good.assign(session_start=[T("2017-02-02 10:00"), T("2017-02-02 10:05")],
                              session_end=[T("2017-02-02 12:00"), T("2017-02-02 12:00")])
    assert "sessions_do_not_overlap" in failing(overlapping)
    too_long = good.assign(session_end=[T("2017-02-03 10:00:01"), T("2017-02-02 12:00")],
                           duration_seconds=[86401, 0])
    assert "duration_within_cap" in failing(too_long)


def test_asset_refuses_a_cap_beyond_its_look_ahead(tmp_path):
    context = build_asset_context(partition_key="2017-02-02-20:00")
    with pytest.raises(Failure, match="look-ahead of 24 hours"):
        list(user_sessions(context, cleaned_events=DuckDBQuery("SELECT 1"),
                           session_rules=SessionRules(max_session_seconds=86401),
                           warehouse=DuckDBWarehouse(database=str(tmp_path / "unused.duckdb"))))


def test_session_csv_layout_formats_for_csv(tmp_path):
    con = duckdb.connect()
    con.register("sessions", sessionize(frame(("2017-02-02 20:50:00", "claim", None))))
    path = tmp_path / "2017020220.csv"
    copy_to_csv_atomic(con, USER_SESSIONS.csv_select_sql("SELECT * FROM sessions", datetime(2017, 2, 2, 20), datetime(2017, 2, 2, 21)), path)
    table = read_rows(path)
    assert list(table[0]) == SESSION_COLUMNS
    assert [table[0][c] for c in ("session_start", "session_end", "is_bounce", "converted")] == [
        "2017-02-02T20:50:00Z", "2017-02-02T20:50:00Z", "true", "true"]


# --------------------------------------------------------------------------- the asset, through the job

def test_asset_stores_a_session_crossing_an_hour_once(tmp_path, run_hours, query):
    source = jsonl(tmp_path / "in" / "events.json",
                   ("1", 1001, "02/02/2017 20:50:00", "page_view", ARTICLES),
                   ("2", 1001, "02/02/2017 21:10:00", "claim", FIND),
                   ("3", 1002, "02/02/2017 21:20:00", "page_view", PHOTOS))
    out = tmp_path / "out"
    result = run_hours(source, out, "2017-02-02-20:00", "2017-02-02-21:00")
    assert result.success and all_session_checks_pass(result)
    expected = [("1001", "2017-02-02 20:50:00", "2017-02-02 21:10:00", 1200, 2, False, True),
                ("1002", "2017-02-02 21:20:00", "2017-02-02 21:20:00", 0, 1, True, False)]
    assert stored(query, out) == expected
    hour_20 = read_rows(out / "user_sessions" / "2017020220.csv")
    hour_21 = read_rows(out / "user_sessions" / "2017020221.csv")
    assert [(r["user_id"], r["session_start"], r["session_end"], r["event_count"]) for r in hour_20] == [
        ("1001", "2017-02-02T20:50:00Z", "2017-02-02T21:10:00Z", "2")]
    assert hour_20[0]["session_id"] == md5("1001|hipages.com.au|2017-02-02T20:50:00.000000Z")
    assert [r["user_id"] for r in hour_21] == ["1002"]
    # The hour-by-hour case (21:00 materialized alone) is in test_rematerializing_an_hour_after_late_events.


def test_asset_session_crossing_midnight(tmp_path, run_hours, query):
    source = jsonl(tmp_path / "in" / "events.json",
                   ("1", 2001, "31/01/2017 23:50:00", "list_directory", "https://www.hipages.com.au/find/plumbers"),
                   ("2", 2001, "01/02/2017 00:15:00", "page_view", CONNECT))
    out = tmp_path / "out"
    result = run_hours(source, out, "2017-01-31-23:00", "2017-02-01-00:00")
    assert result.success and all_session_checks_pass(result)
    assert stored(query, out) == [("2001", "2017-01-31 23:50:00", "2017-02-01 00:15:00", 1500, 2, False, False)]
    before, after = (read_rows(out / "user_sessions" / name) for name in ("2017013123.csv", "2017020100.csv"))
    assert [(r["landing_url_level2"], r["exit_url_level2"], r["list_directory_count"], r["page_view_count"])
            for r in before] == [("find", "connect", "1", "1")]
    assert after == []  # the next day's first hour has its file, header only


def test_rematerializing_an_hour_after_late_events(tmp_path, run_hours, query):
    landing = tmp_path / "landing"
    jsonl(landing / "early.json", ("1", 3001, "02/02/2017 20:50:00", "page_view", ARTICLES))
    out = tmp_path / "out"
    assert run_hours(landing / "*.json", out, "2017-02-02-20:00").success
    assert stored(query, out) == [("3001", "2017-02-02 20:50:00", "2017-02-02 20:50:00", 0, 1, True, False)]

    # Late file: 21:10 continues the 20:50 session (20 min later); 21:45 is 35 min after 21:10.
    jsonl(landing / "late.json", ("2", 3001, "02/02/2017 21:10:00", "claim", FIND),
          ("3", 3001, "02/02/2017 21:45:00", "button_click", CONNECT))
    result = run_hours(landing / "*.json", out, "2017-02-02-21:00")
    assert result.success and all_session_checks_pass(result)
    # 21:00 holds only the session starting at 21:45; 20:00 is stale until re-materialized.
    assert stored(query, out) == [("3001", "2017-02-02 20:50:00", "2017-02-02 20:50:00", 0, 1, True, False),
                                  ("3001", "2017-02-02 21:45:00", "2017-02-02 21:45:00", 0, 1, True, False)]

    result = run_hours(landing / "*.json", out, "2017-02-02-20:00")
    assert result.success and all_session_checks_pass(result)
    assert stored(query, out) == [("3001", "2017-02-02 20:50:00", "2017-02-02 21:10:00", 1200, 2, False, True),
                                  ("3001", "2017-02-02 21:45:00", "2017-02-02 21:45:00", 0, 1, True, False)]
    assert [(r["event_count"], r["converted"]) for r in read_rows(out / "user_sessions" / "2017020220.csv")] == [
        ("2", "true")]


def test_asset_twenty_four_hour_cap_and_lookback_warning(tmp_path, run_hours, query):
    start = datetime(2017, 3, 1)
    source = jsonl(tmp_path / "in" / "events.json", *(
        (f"c{i:02d}", 4001, (start + timedelta(minutes=30 * i)).strftime("%d/%m/%Y %H:%M:%S"), "page_view", ARTICLES)
        for i in range(51)))  # 1 Mar 00:00 .. 2 Mar 01:00, every 30 minutes
    out = tmp_path / "out"
    expected = [("4001", "2017-03-01 00:00:00", "2017-03-02 00:00:00", 86400, 49, False, False),
                ("4001", "2017-03-02 00:30:00", "2017-03-02 01:00:00", 1800, 2, False, False)]
    result = run_hours(source, out, "2017-03-01-00:00", "2017-03-02-01:00")
    assert result.success and all_session_checks_pass(result)
    assert stored(query, out) == expected
    # 2 Mar 00:00 alone: its look-back starts exactly where the user's run of activity starts, so
    # the rows are the same but the WARN check says an earlier, unseen start was possible.
    result = run_hours(source, out, "2017-03-02-00:00")
    assert result.success and stored(query, out) == expected
    checks = session_checks(result)
    assert checks["lookback_covers_sessions"] == (False, AssetCheckSeverity.WARN)
    assert all(checks[name][0] for name in ("event_count_reconciles", "sessions_do_not_overlap",
                                            "duration_within_cap"))


# --------------------------------------------------------------------------- the sample and docs/analyses.md

# `sample_output` (conftest.py): one run of the sample shared by the whole session.


def test_run_writes_user_sessions_csv(sample_output):
    whole = read_rows(sample_output / "user_sessions.csv")
    assert len(whole) == 234
    assert list(whole[0]) == SESSION_COLUMNS
    per_hour = [row for path in sorted((sample_output / "user_sessions").glob("*.csv")) for row in read_rows(path)]
    assert whole == per_hour
    assert sum(int(r["event_count"]) for r in whole) == 500


def render(value: object) -> str:
    """How docs/analyses.md prints a value: NULL, true/false, Python's repr of floats, ISO dates."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def documented_queries(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every ```sql block of the document with the first markdown table after it."""
    found = []
    for match in re.finditer(r"```sql\n(.*?)```", text, flags=re.S):
        following = text[match.end():].split("```sql", 1)[0]
        table = [line.strip() for line in following.splitlines() if line.strip().startswith("|")]
        table = [line for line in table if not re.fullmatch(r"\|[\s:|-]+\|", line)]
        cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
        assert cells, f"no result table after the query:\n{match.group(1)}"
        found.append((match.group(1), cells[0], cells[1:]))
    return found


def test_analyses_queries_match_their_printed_results(sample_output):
    queries = documented_queries(ANALYSES.read_text(encoding="utf-8"))
    assert len(queries) >= 3
    con = duckdb.connect(str(database_path(str(sample_output))), read_only=True)
    try:
        for sql, columns, rows in queries:
            cursor = con.execute(sql)
            actual_columns = [d[0] for d in cursor.description]
            actual_rows = [[render(v) for v in row] for row in cursor.fetchall()]
            assert (actual_columns, actual_rows) == (columns, rows), (
                f"docs/analyses.md is stale; the query\n{sql}\nnow gives\n{markdown_table(actual_columns, actual_rows)}")
    finally:
        con.close()


def test_users_in_buckets_give_the_same_sessions(tmp_path, run_hours, query, monkeypatch, sample_path, sample_output):
    """The asset sessionizes users in hash buckets to bound memory; one bucket or many, the rows
    (and the checks, evaluated per bucket) are the same."""
    one_bucket = run_hours(sample_path, tmp_path / "one", "2017-02-02-20:00")
    monkeypatch.setattr(sessions_asset, "SESSION_BUCKET_EVENTS", 7)  # 242 events -> 35 buckets
    many = run_hours(sample_path, tmp_path / "many", "2017-02-02-20:00")
    assert one_bucket.success and many.success and all_session_checks_pass(many)
    buckets = [r.asset_materializations_for_node("user_sessions")[0].metadata["user_buckets"].value
               for r in (one_bucket, many)]
    assert buckets == [1, 35]
    everything = "SELECT * FROM {s}.user_sessions ORDER BY session_id"
    # as many as the CLI's run of the whole sample stored for that hour (33 sessions of 242 events)
    assert len(query(tmp_path / "one", everything)) == len(read_rows(sample_output / "user_sessions" / "2017020220.csv")) == 33
    pd.testing.assert_frame_equal(query(tmp_path / "one", everything), query(tmp_path / "many", everything))
