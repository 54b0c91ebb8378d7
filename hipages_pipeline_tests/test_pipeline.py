"""The pipeline end to end on the real sample, checked against an independent computation."""

import csv
import json
import shutil
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from dagster import AssetKey

from hipages_pipeline.definitions import defs
from hipages_pipeline.defs.partitions import hour_of, partition_key, run_ranges
from hipages_pipeline_tests.conftest import SAMPLE, query_db, run_job

EVENT_HEADER = ["user_id", "time_stamp", "url_level1", "url_level2", "url_level3", "activity", "event_id"]
HOURLY_HEADER = ["time_bucket", "url_level1", "url_level2", "activity", "activity_count", "user_count"]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def independent_expectation(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """The two tables computed the plain way (json, string splitting, Counter), as a cross-check.

    Every host in the sample ends in .com.au, so its registrable domain is its last three labels.
    """
    events = [json.loads(line) for line in path.read_text().splitlines()]
    rows = []
    for e in events:
        host, _, rest = e["url"].split("://", 1)[-1].partition("/")
        assert host.endswith(".com.au")
        segments = [s for s in rest.split("?")[0].split("/") if s] + ["", ""]
        stamp = datetime.strptime(e["timestamp"], "%d/%m/%Y %H:%M:%S")
        rows.append([str(e["user"]["id"]), stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), ".".join(host.lower().split(".")[-3:]),
                     segments[0], segments[1], e["action"].strip(), e["event_id"]])
    rows.sort(key=lambda r: (r[1], r[6]))
    counts, users = Counter(), defaultdict(set)
    for r in rows:
        key = (r[1][:13].replace("-", "").replace("T", ""), r[2], r[3], r[5])
        counts[key] += 1
        users[key].add(r[0])
    hourly = [[*key, str(n), str(len(users[key]))] for key, n in sorted(counts.items())]
    return rows, hourly


@pytest.fixture
def sample_run(sample_output):
    return 0, sample_output  # the session fixture asserts the exit status


def test_definitions_load():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw_events", "rejected_events", "cleaned_events", "duplicate_events", "hourly_activity",
            "event_table_csv", "hourly_activity_csv", "rejected_without_hour"} <= keys
    checks = {f"{k.asset_key.to_user_string()}.{k.name}" for k in graph.asset_check_keys}
    assert {"raw_events.lines_accounted", "rejected_events.rejected_share_below_threshold",
            "cleaned_events.event_id_unique_not_null", "hourly_activity.reconciles_with_cleaned_events",
            "event_table_csv.csv_row_count_matches_table"} <= checks
    assert defs.resolve_job_def("hipages_etl_job") is not None
    assert graph.get(AssetKey("cleaned_events")).partitions_def.get_first_partition_key() == "2017-01-01-00:00"


def test_sample_run_matches_independent_computation(sample_run):
    status, out = sample_run
    assert status == 0
    expected_events, expected_hourly = independent_expectation(SAMPLE)
    events = read_csv(out / "event_table.csv")
    hourly = read_csv(out / "hourly_activity.csv")
    assert events[0] == EVENT_HEADER and hourly[0] == HOURLY_HEADER
    assert len(events) - 1 == 500 and len(hourly) - 1 == 28
    assert events[1:] == expected_events
    assert sorted(hourly[1:]) == expected_hourly
    assert ["2017020220", "hipages.com.au", "articles", "page_view", "59", "30"] in hourly
    assert read_csv(out / "rejected_events.csv")[1:] == []


def test_sample_run_per_partition_files_and_database(sample_run):
    _, out = sample_run
    files = sorted(p.name for p in (out / "event_table").glob("*.csv"))
    assert files == ["2017010120.csv", "2017020220.csv", "2017020420.csv", "2017030120.csv", "2017040220.csv",
                     "2017050220.csv", "2017080220.csv", "2017120220.csv"]
    assert len(read_csv(out / "event_table" / "2017020220.csv")) - 1 == 242
    counts = query_db(out, "SELECT (SELECT count(*) FROM {s}.raw_events) raw, (SELECT count(*) FROM {s}.cleaned_events) cleaned, "
                           "(SELECT count(*) FROM {s}.rejected_events) rejected, (SELECT count(*) FROM {s}.hourly_activity) hourly")
    assert counts.to_dict("records") == [{"raw": 500, "cleaned": 500, "rejected": 0, "hourly": 28}]
    # No raw IP leaves the internal raw table: the anonymised column keeps the /24 network only.
    ips = query_db(out, "SELECT ip_anonymised, ip_valid FROM {s}.cleaned_events WHERE event_id = '893479324983546'")
    assert ips.to_dict("records") == [{"ip_anonymised": None, "ip_valid": False}]  # 111.222.333.4 is invalid
    ips = query_db(out, "SELECT ip_anonymised FROM {s}.cleaned_events WHERE event_id = '324872349721534'")
    assert ips["ip_anonymised"].tolist() == ["111.222.33.0"]  # from 111.222.33.66
    for name in ("event_table.csv", "hourly_activity.csv", "rejected_events.csv"):
        assert "111.222." not in (out / name).read_text()


def _shifted_sample(tmp_path: Path) -> Path:
    """The 242 events of 2017-02-02 20:00, spread over 19:00, 20:00 and 21:00 by line number."""
    lines = [line for line in SAMPLE.read_text().splitlines() if "02/02/2017 20:" in line]
    shifted = [line.replace("02/02/2017 20:", f"02/02/2017 {19 + i % 3}:") for i, line in enumerate(lines)]
    path = tmp_path / "three_hours.json"
    path.write_text("\n".join(shifted) + "\n")
    return path


def test_ranged_run_equals_hour_by_hour(tmp_path):
    source = _shifted_sample(tmp_path)
    ranged, hourly = tmp_path / "ranged", tmp_path / "hourly"
    assert run_job(source, ranged, "2017-02-02-19:00", "2017-02-02-21:00").success
    for hour in ("19", "20", "21"):
        assert run_job(source, hourly, f"2017-02-02-{hour}:00").success
    for table in ("cleaned_events", "hourly_activity", "rejected_events", "duplicate_events"):
        sql = f"SELECT * EXCLUDE (rejected_at) FROM {{s}}.{table} ORDER BY ALL" if table == "rejected_events" else \
            f"SELECT * FROM {{s}}.{table} ORDER BY ALL"
        assert query_db(ranged, sql).equals(query_db(hourly, sql)), table
    for directory in ("event_table", "hourly_activity"):
        for name in ("2017020219.csv", "2017020220.csv", "2017020221.csv"):
            assert (ranged / directory / name).read_bytes() == (hourly / directory / name).read_bytes()
    assert query_db(ranged, "SELECT count(*) n FROM {s}.cleaned_events")["n"].item() == 242


def test_rerun_replaces_rows_and_gives_identical_files(tmp_path):
    source = _shifted_sample(tmp_path)
    out = tmp_path / "out"
    assert run_job(source, out, "2017-02-02-19:00", "2017-02-02-21:00").success
    first = {p.name: p.read_bytes() for p in (out / "event_table").glob("*.csv")}
    assert run_job(source, out, "2017-02-02-20:00").success
    assert run_job(source, out, "2017-02-02-19:00", "2017-02-02-21:00").success
    assert {p.name: p.read_bytes() for p in (out / "event_table").glob("*.csv")} == first
    assert query_db(out, "SELECT count(*) n FROM {s}.cleaned_events")["n"].item() == 242
    assert query_db(out, "SELECT count(*) n FROM {s}.raw_events")["n"].item() == 242


def test_hours_without_data_give_empty_tables_and_header_only_files(tmp_path):
    out = tmp_path / "out"
    result = run_job(SAMPLE, out, "2017-06-01-00:00", "2017-06-01-02:00")
    assert result.success
    assert sorted(p.name for p in (out / "hourly_activity").glob("*.csv")) == [
        "2017060100.csv", "2017060101.csv", "2017060102.csv"]
    assert read_csv(out / "hourly_activity" / "2017060101.csv") == [HOURLY_HEADER]
    assert read_csv(out / "event_table" / "2017060102.csv") == [EVENT_HEADER]
    assert query_db(out, "SELECT count(*) n FROM {s}.cleaned_events")["n"].item() == 0


def test_partition_cap_splits_contiguous_hours():
    hours = [datetime(2017, 2, 2, h) for h in (4, 0, 1, 2, 3)] + [datetime(2017, 2, 3, 0), datetime(2017, 2, 2, 23)]
    day2, day3 = (lambda h: datetime(2017, 2, 2, h)), datetime(2017, 2, 3)

    def ranges(max_hours=None):
        return [(hour_of(r.start), hour_of(r.end)) for r in run_ranges(map(partition_key, hours), max_hours)]

    assert ranges() == [(day2(0), day2(4)), (day2(23), day3)]
    assert ranges(2) == [(day2(0), day2(1)), (day2(2), day2(3)), (day2(4), day2(4)), (day2(23), day3)]
    assert ranges(1) == [(h, h) for h in sorted(hours)]


def test_whole_files_are_assets_that_hold_every_stored_hour(tmp_path):
    """Two runs of one hour each: the whole files written by the second hold both hours, byte for
    byte the header and the two hour files' rows (the independent computation gives 59 + 28 events)."""
    out = tmp_path / "out"
    first = run_job(SAMPLE, out, "2017-01-01-20:00")
    second = run_job(SAMPLE, out, "2017-02-04-20:00")
    assert first.success and second.success
    events, _ = independent_expectation(SAMPLE)
    expected = [r for r in events if r[1][:13] in ("2017-01-01T20", "2017-02-04T20")]
    assert len(expected) == 59 + 28
    assert read_csv(out / "event_table.csv") == [EVENT_HEADER, *expected]
    for name in ("event_table", "hourly_activity", "user_sessions"):
        parts = [(out / name / f"{hour}.csv").read_bytes() for hour in ("2017010120", "2017020420")]
        header = parts[0].split(b"\r\n", 1)[0] + b"\r\n"
        assert (out / f"{name}.csv").read_bytes() == header + b"".join(p[len(header):] for p in parts), name
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in second.get_asset_check_evaluations()}
    assert {key: passed for key, passed in checks.items() if key[0].startswith("whole_")} == {
        (f"whole_{name}_csv", "whole_file_matches_table"): True
        for name in ("event_table", "hourly_activity", "user_sessions", "rejected_events")}


def test_a_failed_hour_never_shrinks_the_whole_files(tmp_path, sample_output_copy):
    """The sample (the session's run, copied: it exited 0), then the sample plus 10 quarantined
    lines in 2017-02-04 20:00 (26% of that hour: its blocking gate fails): the whole files still
    hold every stored hour, the failed hour's previous rows included (500 events, 28 hourly rows),
    and the run exits 1."""
    from hipages_pipeline.cli import main

    out = sample_output_copy
    before = {name: (out / f"{name}.csv").read_bytes() for name in ("event_table", "hourly_activity", "user_sessions")}
    line = SAMPLE.read_text().splitlines()[0]
    stamp = json.loads(line)["timestamp"]
    bad = [line.replace(stamp, f"04/02/2017 20:{m:02d}:00").replace('"url" : "', '"url" : "ftp://x/') for m in range(10)]
    source = tmp_path / "with_bad_hour.json"
    source.write_text(SAMPLE.read_text().rstrip("\n") + "\n" + "\n".join(bad) + "\n")
    assert main(["run", "--source", str(source), "--output-dir", str(out)]) == 1
    assert len(read_csv(out / "event_table.csv")) == 1 + 500
    assert len(read_csv(out / "hourly_activity.csv")) == 1 + 28
    assert {name: (out / f"{name}.csv").read_bytes() for name in before} == before
    assert len(read_csv(out / "rejected_events.csv")) == 1 + 10


@pytest.fixture(scope="module")
def sample_as_b(tmp_path_factory) -> tuple[Path, Path, int]:
    """One `hipages-pipeline run` of the sample as ``b_sample.json`` for the module: the folder
    holding that file, the output directory (copy it to change it) and the exit status."""
    from hipages_pipeline.cli import main

    folder = tmp_path_factory.mktemp("sample_as_b")
    sample = folder / "b_sample.json"
    sample.write_bytes(SAMPLE.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        status = main(["run", "--source", str(sample), "--output-dir", str(folder / "out")])
    return folder, folder / "out", status


@pytest.mark.xdist_group("sample_as_b")  # one worker runs both cases: one run of the module fixture
@pytest.mark.parametrize("name, accepted, duplicates", [("a_one_hour.json", 59, 0), ("c_one_hour.json", 0, 59)])
def test_the_accounting_is_of_this_source_whatever_else_the_database_holds(tmp_path, capsys, sample_as_b, name,
                                                                            accepted, duplicates):
    """The sample (as b_sample.json), then only its 2017-01-01 20:00 hour (59 lines) as another file into
    the same output directory: the second run accounts for its own 59 lines, though the database holds
    500 events. Of two copies of an event the first by path is kept: a_ keeps the new file's lines, c_
    makes them duplicates, and a source of duplicates only is not an error. The first run is the
    module's (sample_as_b), copied; the new file sits beside b_sample.json, so only the names differ."""
    from hipages_pipeline.cli import main

    folder, first_run, status = sample_as_b
    assert status == 0
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    subset = folder / name
    subset.write_text("".join(line for line in SAMPLE.open() if '"01/01/2017 20:' in line))
    assert len(subset.read_text().splitlines()) == 59
    capsys.readouterr()
    assert main(["run", "--source", str(subset), "--output-dir", str(out)]) == 0
    assert f"59 = {accepted} + {duplicates} + 0 (ok)" in capsys.readouterr().out
    assert len(read_csv(out / "event_table.csv")) == 1 + 500
