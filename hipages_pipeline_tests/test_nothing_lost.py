"""Nothing lost: quarantine end to end, duplicates, blocking checks, CSV round trips, the CLI's exit codes."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hipages_pipeline.cli import main
from hipages_pipeline_tests.conftest import PROJECT_ROOT, SAMPLE, query_db, run_job


def event(event_id: str, **overrides) -> dict:
    base = {"event_id": event_id, "user": {"session_id": "1", "id": 7, "ip": "10.0.0.1"}, "action": "page_view",
            "url": "https://www.hipages.com.au/articles", "timestamp": "02/02/2017 20:22:00"}
    base.update(overrides)
    return base


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_sample_plus_a_corrupt_line(tmp_path, capsys):
    source = tmp_path / "events.json"
    source.write_text(SAMPLE.read_text() + '\n{ "event_id" : "56a56", "user" : { "id" : 56a56 } }\n')
    for _ in range(2):  # a re-run over the same input replaces rows: the quarantine holds one row
        assert main(["run", "--source", str(source), "--output-dir", str(tmp_path / "out")]) == 0
        printed = capsys.readouterr().out
        assert "501 = 500 + 0 + 1 (ok)" in printed
    with open(tmp_path / "out" / "rejected_events.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    assert (rows[0]["source_file"], rows[0]["line_number"], rows[0]["reason"]) == (str(source), "501", "invalid_json")
    assert rows[0]["raw_line"] == '{ "event_id" : "56a56", "user" : { "id" : 56a56 } }'
    assert rows[0]["time_stamp"] == ""
    with open(tmp_path / "out" / "event_table.csv", newline="") as handle:
        assert sum(1 for _ in csv.reader(handle)) == 501  # header + 500 events


def test_retries_and_conflicts(tmp_path):
    source = write_lines(tmp_path / "dupes.json", [
        event("a"), event("a"),                         # retry: identical payload
        event("b"), event("b", action="claim"),         # conflict: same id, another action
        event("c"), event("c", timestamp="02/02/2017 21:22:00"),  # same id in another hour: both kept
    ])
    out = tmp_path / "out"
    result = run_job(source, out, "2017-02-02-20:00", "2017-02-02-21:00")
    assert result.success
    cleaned = query_db(out, "SELECT event_id, activity, line_number FROM {s}.cleaned_events ORDER BY line_number")
    assert cleaned.values.tolist() == [["a", "page_view", 1], ["b", "page_view", 3], ["c", "page_view", 5],
                                       ["c", "page_view", 6]]
    dupes = query_db(out, "SELECT event_id, duplicate_kind, line_number, kept_line_number FROM {s}.duplicate_events ORDER BY line_number")
    assert dupes.values.tolist() == [["a", "retry", 2, 1], ["b", "conflict", 4, 3]]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_conflicting_duplicates"] is False and checks["events_accounted"] is True


def test_rejected_share_over_threshold_blocks_downstream(tmp_path):
    good = [event(str(i)) for i in range(18)]
    bad = [event("x", url=""), event("y", user="oops")]  # 2 of 20 = 10% > 5%
    source = write_lines(tmp_path / "bad.json", good + bad)
    out = tmp_path / "out"
    result = run_job(source, out, "2017-02-02-20:00")
    assert not result.success
    checks = {e.check_name: (e.passed, e.metadata["rejected_share"].value) for e in result.get_asset_check_evaluations()
              if e.check_name == "rejected_share_below_threshold"}
    assert checks == {"rejected_share_below_threshold": (False, 0.1)}
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events() and
                    [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]}
    assert {"raw_events", "rejected_events"} <= materialized
    assert "cleaned_events" not in materialized and "event_table_csv" not in materialized
    reasons = query_db(out, "SELECT reason, field FROM {s}.rejected_events ORDER BY line_number").values.tolist()
    assert reasons == [["bad_url", "url"], ["wrong_type", "user"]]


def test_csv_round_trips_awkward_values(tmp_path):
    awkward = ["a,b", 'say "hi"', "two\nlines", "=1+2", "+61 2", "-cmd", "@SUM(A1)", "tab\there", "ünï"]
    source = write_lines(tmp_path / "awkward.json", [
        event(str(i), action=value, url=f"https://www.hipages.com.au/p{i}/{value.replace(chr(10), ' ')}", user={"id": value})
        for i, value in enumerate(awkward)])
    out = tmp_path / "out"
    assert run_job(source, out, "2017-02-02-20:00").success
    with open(out / "event_table" / "2017020220.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["user_id"], r["activity"]) for r in rows) == sorted((v, v.strip()) for v in awkward)
    # urllib drops ASCII tabs and line breaks inside URLs (WHATWG URL rule), so "tab\there" -> "tabhere".
    assert sorted(r["url_level3"] for r in rows) == sorted(v.replace("\n", " ").replace("\t", "") for v in awkward)
    assert (out / "event_table" / "2017020220.csv").read_bytes().count(b'"two\nlines"') == 2


def test_invalid_duckdb_settings_are_configuration_errors(tmp_path, capsys):
    common = ["run", "--source", str(SAMPLE), "--output-dir", str(tmp_path / "o")]
    assert main([*common, "--memory-limit", "lots"]) == 2
    assert "invalid DuckDB settings memory_limit='lots'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: usage error
        main([*common, "--threads", "0"])
    assert exited.value.code == 2 and "at least 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "hipages.duckdb").exists()


def test_cli_without_source_files_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--source", str(tmp_path / "nothing*.json"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "No source file matches" in capsys.readouterr().err


def test_cli_on_an_empty_file(tmp_path, capsys):
    (tmp_path / "empty.json").write_bytes(b"")
    assert main(["run", "--source", str(tmp_path / "empty.json"), "--output-dir", str(tmp_path / "o")]) == 0
    assert "0 = 0 + 0 + 0 (ok)" in capsys.readouterr().out
    assert (tmp_path / "o" / "event_table.csv").read_bytes() == b"user_id,time_stamp,url_level1,url_level2,url_level3,activity,event_id\r\n"


def test_cli_on_a_json_array_document(tmp_path, capsys):
    source = tmp_path / "array.json"
    source.write_text(json.dumps([event("1"), event("2")], indent=2))
    assert main(["run", "--source", str(source), "--output-dir", str(tmp_path / "o")]) == 1
    printed = capsys.readouterr().out
    lines = len(source.read_text().splitlines())
    assert f"{lines} = 0 + 0 + {lines} (ok)" in printed
    assert "NO EVENT ACCEPTED" in printed
    assert "WARN rejected_without_hour.no_lines_without_hour" in printed
    assert "looks like one JSON array document" in (tmp_path / "o" / "rejected_events.csv").read_text()


def test_same_bytes_in_every_process_time_zone(tmp_path):
    """The sample run by three processes, one per time zone, at the same time (each its own
    output directory; started together to save the suite's time)."""
    outputs, processes = {}, {}
    for tz in ("UTC", "America/New_York", "Australia/Sydney"):
        env = {**os.environ, "TZ": tz}
        processes[tz] = subprocess.Popen(
            [sys.executable, "-m", "hipages_pipeline.cli", "run", "--source", str(SAMPLE),
             "--output-dir", str(tmp_path / tz.replace("/", "_"))],
            env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for tz, process in processes.items():
            _, stderr = process.communicate(timeout=900)
            assert process.returncode == 0, stderr
            out = tmp_path / tz.replace("/", "_")
            outputs[tz] = [(out / name).read_bytes() for name in ("event_table.csv", "hourly_activity.csv")]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert outputs["UTC"] == outputs["America/New_York"] == outputs["Australia/Sydney"]
    assert b"2017-02-02T20:22:00Z" in outputs["Australia/Sydney"][0]


def test_cli_with_an_unwritable_output_directory_fails_fast(tmp_path, capsys):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    assert main(["run", "--source", str(SAMPLE), "--output-dir", str(not_a_directory / "out")]) == 2
    assert f"cannot write to the output directory {not_a_directory / 'out'}" in capsys.readouterr().err


def test_cli_with_an_unknown_time_zone(tmp_path, capsys):
    assert main(["run", "--source", str(SAMPLE), "--output-dir", str(tmp_path), "--timezone", "Mars/Olympus"]) == 2
    assert "Unknown source time zone 'Mars/Olympus'" in capsys.readouterr().err


def test_cli_summary_when_a_blocking_check_stops_an_hour(tmp_path, capsys):
    source = write_lines(tmp_path / "bad.json", [event(str(i)) for i in range(18)] + [event("x", url=""), event("y", user="oops")])
    assert main(["run", "--source", str(source), "--output-dir", str(tmp_path / "o")]) == 1
    printed = capsys.readouterr()
    assert "20 = 0 + 0 + 2 (incomplete: 1 run(s) failed" in printed.out
    assert "blocking asset check failed" in printed.out and "rejected_share_below_threshold" in printed.out
    assert "Traceback" not in printed.out + printed.err and "Stack Trace" not in printed.out + printed.err
    with open(tmp_path / "o" / "rejected_events.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["line_number"], r["reason"], r["time_stamp"]) for r in rows] == [
        ("19", "bad_url", "2017-02-02T20:22:00Z"), ("20", "wrong_type", "2017-02-02T20:22:00Z")]
