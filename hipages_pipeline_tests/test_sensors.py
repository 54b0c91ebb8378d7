"""The landing-files sensor, evaluated with ``build_sensor_context`` on a temporary landing folder,
and the sessions refresh sensor, evaluated with ``build_run_status_sensor_context`` on real runs."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRun,
    RunRequest,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as RANGE_END_TAG,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_START_TAG as RANGE_START_TAG,
)
from dagster._core.storage.tags import (
    PARTITION_NAME_TAG,
)

from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.automation import sensors
from hipages_pipeline.defs.automation.jobs import SESSION_ASSETS
from hipages_pipeline.defs.automation.sensors import (
    SESSIONS_SENSOR_NAME,
    build_landing_files_sensor,
    build_sessions_refresh_sensor,
    sessions_refresh_request,
)
from hipages_pipeline.defs.partitions import run_ranges
from hipages_pipeline.defs.resources import EventSource, make_resources
from hipages_pipeline.lib.landing_files import LandingCursor
from hipages_pipeline.lib.sql.scan import source_hours

SENSOR = build_landing_files_sensor(running=False)
SESSIONS_SENSOR = build_sessions_refresh_sensor(running=False)
KEY = "%Y-%m-%d-%H:%M"


def event(event_id: str, when: str, user: int = 1) -> str:
    """One valid source line; ``when`` is ``DD/MM/YYYY HH:MM:SS`` (UTC)."""
    return json.dumps({"event_id": event_id, "user": {"session_id": "1", "id": user, "ip": "10.1.2.3"},
                       "action": "page_view", "url": "https://www.hipages.com.au/articles", "timestamp": when})


def write(path: Path, *lines: str, mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8", newline="") as handle:
        handle.write("".join(line + "\n" for line in lines))


def tick(landing: Path, cursor: str | None = None, pattern: str = "*.json*") -> SensorResult:
    """Evaluate the sensor once on ``landing`` (as the daemon would, with the stored cursor)."""
    context = build_sensor_context(cursor=cursor, resources={"source": EventSource(source_glob=str(landing / pattern))})
    result = SENSOR(context)
    assert isinstance(result, SensorResult)
    return result


def runs(result: SensorResult) -> list[tuple[str, str]]:
    """The requested hours as (first, last) partition keys, or ("rejected_without_hour", "")."""
    out = []
    for request in result.run_requests or []:
        assert isinstance(request, RunRequest)
        if request.asset_selection:
            assert request.asset_selection == [AssetKey("rejected_without_hour")]
            assert request.partition_key is None and RANGE_START_TAG not in request.tags
            out.append(("rejected_without_hour", ""))
        elif request.partition_key:
            assert RANGE_START_TAG not in request.tags
            out.append((request.partition_key, request.partition_key))
        else:
            out.append((request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]))
    return out


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def test_new_file_requests_contiguous_hours_as_one_ranged_run(landing):
    write(landing / "a.json",
          event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 21:05:00"),
          event("3", "02/02/2017 21:59:59"), event("4", "03/02/2017 01:00:00"))
    result = tick(landing)
    assert runs(result) == [("2017-02-02-20:00", "2017-02-02-21:00"), ("2017-02-03-01:00", "2017-02-03-01:00")]
    state = LandingCursor.parse(result.cursor).files[str(landing / "a.json")]
    assert (state.offset, state.lines) == ((landing / "a.json").stat().st_size, 4)
    assert all(request.tags["hipages/trigger"] == "landing-files-sensor" for request in result.run_requests)
    # whole-job runs only: the sessions refresh follows each run via the run-status sensor
    assert [r.asset_selection for r in result.run_requests] == [None, None]
    assert result.run_requests[0].tags[RANGE_START_TAG] == "2017-02-02-20:00"
    assert result.run_requests[1].partition_key == "2017-02-03-01:00"


def test_appended_lines_request_only_their_hours_and_never_twice(landing):
    path = landing / "a.json"
    write(path, event("1", "02/02/2017 20:22:00"))
    first = tick(landing)
    assert runs(first) == [("2017-02-02-20:00", "2017-02-02-20:00")]
    # a late event for an old hour and one for a new hour, appended to the same file
    write(path, event("2", "01/01/2017 00:30:00"), event("3", "05/03/2017 10:00:00"), mode="a")
    second = tick(landing, first.cursor)
    assert runs(second) == [("2017-01-01-00:00", "2017-01-01-00:00"), ("2017-03-05-10:00", "2017-03-05-10:00")]
    assert LandingCursor.parse(second.cursor).files[str(path)].lines == 3
    # the same lines never trigger twice; run keys differ between ticks
    third = tick(landing, second.cursor)
    assert not third.run_requests and third.skip_reason
    keys = [r.run_key for r in first.run_requests + second.run_requests]
    assert len(set(keys)) == len(keys)


def test_unchanged_folder_skips_with_a_reason(landing):
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"))
    write(landing / "b.json", event("2", "02/02/2017 23:22:00"))
    first = tick(landing)
    assert len(runs(first)) == 2
    again = tick(landing, first.cursor)
    assert again.run_requests == [] or again.run_requests is None
    assert "no new lines in 2 file(s)" in again.skip_reason.skip_message
    assert again.cursor == first.cursor  # a restart with the stored cursor forgets nothing


def test_empty_folder_and_no_match_skip(landing):
    result = tick(landing)
    assert not result.run_requests
    assert "No source file matches" in result.skip_reason.skip_message


def test_only_bad_lines_request_the_quarantine_without_hour_alone(landing):
    # no line has a usable event time: invalid JSON, an array, a bad date, a year out of range
    write(landing / "bad.json", '"id" : 56a56', "[1, 2]", json.dumps({"timestamp": "31/02/2017 10:00:00"}),
          event("9", "01/01/1999 10:00:00"), "")
    result = tick(landing)
    assert runs(result) == [("rejected_without_hour", "")]
    assert LandingCursor.parse(result.cursor).files[str(landing / "bad.json")].lines == 5
    assert not tick(landing, result.cursor).run_requests


def test_bad_lines_with_an_hour_go_with_that_hour(landing):
    # a dated reject (bad url) belongs to its hour's quarantine, rejected_events; the invalid JSON
    # line is rebuilt into rejected_without_hour by the same run (the job holds that asset too)
    bad_url = json.loads(event("5", "02/02/2017 20:10:00"))
    bad_url["url"] = "not a url"
    write(landing / "mixed.json", json.dumps(bad_url), "{oops")
    assert runs(tick(landing)) == [("2017-02-02-20:00", "2017-02-02-20:00")]


def test_truncated_or_rotated_file_is_read_again_from_zero(landing):
    path = landing / "a.json"
    write(path, event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 20:23:00"))
    first = tick(landing)
    write(path, event("3", "04/04/2017 04:04:00"))  # truncated: shorter than the offset
    second = tick(landing, first.cursor)
    assert runs(second) == [("2017-04-04-04:00", "2017-04-04-04:00")]
    assert LandingCursor.parse(second.cursor).files[str(path)].lines == 1
    # rotated: a different file under the same name, longer than the old one
    os.replace(_written(landing / "next.tmp", event("4", "05/05/2017 05:05:00"), event("5", "05/05/2017 06:05:00")),
               path)
    third = tick(landing, second.cursor)
    assert runs(third) == [("2017-05-05-05:00", "2017-05-05-06:00")]


def _written(path: Path, *lines: str) -> Path:
    write(path, *lines)
    return path


def test_a_last_line_being_written_waits_until_it_is_whole_or_the_file_is_stable(landing):
    path = landing / "a.json"
    second = event("2", "03/02/2017 08:00:00")
    path.write_text(event("1", "02/02/2017 20:22:00") + "\n" + second[:30], encoding="utf-8")
    first = tick(landing)  # the receiver is still writing the second line: not read yet
    assert runs(first) == [("2017-02-02-20:00", "2017-02-02-20:00")]
    assert LandingCursor.parse(first.cursor).files[str(path)].lines == 1
    write(path, second[30:], mode="a")
    completed = tick(landing, first.cursor)
    assert runs(completed) == [("2017-02-03-08:00", "2017-02-03-08:00")]
    state = LandingCursor.parse(completed.cursor).files[str(path)]
    assert (state.offset, state.lines) == (path.stat().st_size, 2)
    # a line that stays cut (no newline, not JSON) is read once the file is unchanged for a tick
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"event_id": "3", "tim')
    held = tick(landing, completed.cursor)
    assert not held.run_requests
    stable = tick(landing, held.cursor)
    assert runs(stable) == [("rejected_without_hour", "")]


def test_a_whole_last_line_without_newline_is_read_at_once_and_its_newline_later_skipped(landing):
    # like the sample: the last line has no newline
    path = landing / "a.json"
    path.write_text(event("1", "02/02/2017 20:22:00") + "\n" + event("2", "03/02/2017 08:00:00"), encoding="utf-8")
    first = tick(landing)
    assert runs(first) == [("2017-02-02-20:00", "2017-02-02-20:00"), ("2017-02-03-08:00", "2017-02-03-08:00")]
    assert LandingCursor.parse(first.cursor).files[str(path)].open_line
    assert not tick(landing, first.cursor).run_requests
    # the receiver goes on: the newline that closes line 2 is not a blank line
    write(path, "", event("3", "04/02/2017 09:00:00"), mode="a")
    second = tick(landing, first.cursor)
    assert runs(second) == [("2017-02-04-09:00", "2017-02-04-09:00")]
    state = LandingCursor.parse(second.cursor).files[str(path)]
    assert (state.offset, state.lines, state.open_line) == (path.stat().st_size, 3, False)


def test_a_continued_last_line_redoes_its_old_hour(landing):
    # appending to a file whose last line has no newline glues the new text onto that line: the
    # pipeline then reads one invalid line, so the old line's hour must be materialized again
    path = landing / "a.json"
    path.write_text(event("1", "02/02/2017 20:22:00") + "\n" + event("2", "03/02/2017 08:00:00"), encoding="utf-8")
    first = tick(landing)
    assert LandingCursor.parse(first.cursor).files[str(path)].open_hour == "2017-02-03-08:00"
    write(path, " trailing text", event("3", "04/02/2017 09:00:00"), mode="a")
    second = tick(landing, first.cursor)
    assert runs(second) == [("2017-02-03-08:00", "2017-02-03-08:00"), ("2017-02-04-09:00", "2017-02-04-09:00")]
    state = LandingCursor.parse(second.cursor).files[str(path)]
    assert (state.offset, state.lines, state.open_line) == (path.stat().st_size, 3, False)


def test_hours_that_have_not_ended_wait_in_the_cursor(landing, monkeypatch):
    monkeypatch.setattr(sensors, "utc_now", lambda: datetime(2017, 2, 2, 20, 40))
    write(landing / "a.json", event("1", "02/02/2017 19:59:00"), event("2", "02/02/2017 20:22:00"))
    first = tick(landing)
    assert runs(first) == [("2017-02-02-19:00", "2017-02-02-19:00")]
    assert LandingCursor.parse(first.cursor).pending == ["2017-02-02-20:00"]
    assert "waiting" in tick(landing, first.cursor).skip_reason.skip_message
    monkeypatch.setattr(sensors, "utc_now", lambda: datetime(2017, 2, 2, 21, 0, 5))
    later = tick(landing, first.cursor)
    assert runs(later) == [("2017-02-02-20:00", "2017-02-02-20:00")]
    assert LandingCursor.parse(later.cursor).pending == []


def test_a_big_backlog_is_read_over_several_ticks(landing):
    lines = [event(str(i), f"0{i}/02/2017 10:00:00") for i in range(1, 6)]
    write(landing / "a.json", *lines)
    small = build_landing_files_sensor(running=False, max_bytes_per_tick=2 * len(lines[0]))
    requested, cursor = [], None
    for _ in range(3):
        context = build_sensor_context(cursor=cursor, resources={"source": EventSource(source_glob=str(landing / "*.json"))})
        result = small(context)
        requested += runs(result)
        cursor = result.cursor
    assert requested == [(f"2017-02-0{i}-10:00", f"2017-02-0{i}-10:00") for i in range(1, 6)]
    assert LandingCursor.parse(cursor).files[str(landing / "a.json")].lines == 5


def test_gzip_files_and_a_broken_cursor(landing):
    with gzip.open(landing / "a.json.gz", "wt", encoding="utf-8") as handle:
        handle.write(event("1", "02/02/2017 20:22:00") + "\n")
    first = tick(landing)
    assert runs(first) == [("2017-02-02-20:00", "2017-02-02-20:00")]
    assert not tick(landing, first.cursor).run_requests
    assert runs(tick(landing, "not json")) == runs(first)  # a broken cursor re-reads from zero


def test_the_sample_gives_the_same_hours_as_the_pipeline(landing, sample_path):
    shutil.copy(sample_path, landing / "source_event_data.json")
    result = tick(landing)
    found = source_hours([sample_path], EventSource().settings())
    expected = [(r.start, r.end) for r in run_ranges(h.to_pydatetime().strftime(KEY) for h in found["hour"])]
    assert runs(result) == expected
    assert len(expected) == len(found) == 8  # the sample's 8 hours are far apart


def test_requested_runs_materialize_exactly_those_hours(landing, tmp_path, query):
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 21:05:00"), "{oops")
    result = tick(landing)
    resources = make_resources(EventSource(source_glob=str(landing / "*.json")), str(tmp_path / "out"))
    job = build_definitions(resources).resolve_job_def("hipages_etl_job")
    instance = DagsterInstance.ephemeral()
    for request in result.run_requests:
        outcome = job.execute_in_process(instance=instance, tags=request.tags, partition_key=request.partition_key,
                                         asset_selection=request.asset_selection, raise_on_error=False)
        assert outcome.success
    hours = query(tmp_path / "out", "SELECT strftime(time_stamp, '%Y%m%d%H') AS h, count(*) AS n "
                                   "FROM {s}.cleaned_events GROUP BY 1 ORDER BY 1")
    assert hours.values.tolist() == [["2017020220", 1], ["2017020221", 1]]
    unplaced = query(tmp_path / "out", "SELECT reason FROM {s}.rejected_without_hour")
    assert unplaced["reason"].tolist() == ["invalid_json"]


def refresh_after(run: DagsterRun, instance: DagsterInstance, success_event) -> RunRequest | SkipReason:
    """Evaluate the sessions refresh sensor for a succeeded run, as the daemon does."""
    context = build_run_status_sensor_context(sensor_name=SESSIONS_SENSOR_NAME, dagster_event=success_event,
                                              dagster_instance=instance, dagster_run=run)
    return SESSIONS_SENSOR(context)


def test_sessions_refresh_follows_a_succeeded_run_and_not_its_own(landing, tmp_path, query, monkeypatch):
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 21:05:00", user=2))
    resources = make_resources(EventSource(source_glob=str(landing / "*.json")), str(tmp_path / "out"))
    job = build_definitions(resources).resolve_job_def("hipages_etl_job")
    instance = DagsterInstance.ephemeral()
    # a ranged run of hours 20:00 .. 21:00, as the landing sensor requests it
    (request,) = tick(landing).run_requests
    etl = job.execute_in_process(instance=instance, tags=request.tags)
    etl_run = instance.get_run_by_id(etl.run_id)
    assert (etl_run.tags[RANGE_START_TAG], etl_run.tags[RANGE_END_TAG]) == ("2017-02-02-20:00", "2017-02-02-21:00")
    refresh = refresh_after(etl_run, instance, etl.get_run_success_event())
    assert isinstance(refresh, RunRequest)
    # sessions of 20:00 - 24 h .. 21:00 + 1 h may change: one ranged run of the two session assets
    assert refresh.asset_selection == SESSION_ASSETS
    assert (refresh.tags[RANGE_START_TAG], refresh.tags[RANGE_END_TAG]) == ("2017-02-01-20:00", "2017-02-02-22:00")
    assert refresh.partition_key is None
    assert refresh.run_key == f"sessions:2017-02-01-20:00..2017-02-02-22:00@{etl.run_id}"
    # evaluated at 22:30 (naive UTC, the module's clock), the hour 22:00 has not ended: up to 21:00
    monkeypatch.setattr(sensors, "utc_now", lambda: datetime(2017, 2, 2, 22, 30))
    early = refresh_after(etl_run, instance, etl.get_run_success_event())
    assert (early.tags[RANGE_START_TAG], early.tags[RANGE_END_TAG]) == ("2017-02-01-20:00", "2017-02-02-21:00")
    monkeypatch.undo()
    # the refresh run itself succeeds, and its success requests nothing (no loop)
    sessions = job.execute_in_process(instance=instance, tags=refresh.tags, asset_selection=refresh.asset_selection)
    sessions_run = instance.get_run_by_id(sessions.run_id)
    assert sessions_run.asset_selection == frozenset(SESSION_ASSETS)
    assert isinstance(refresh_after(sessions_run, instance, sessions.get_run_success_event()), SkipReason)
    counts = query(tmp_path / "out", "SELECT user_id, event_count FROM {s}.user_sessions ORDER BY 1")
    assert counts.values.tolist() == [["1", 1], ["2", 1]]


def test_sessions_refresh_range_is_clipped_to_the_partitions_and_to_ended_hours(monkeypatch):
    def run(tags: dict[str, str], selection=None) -> DagsterRun:
        return DagsterRun(job_name="hipages_etl_job", run_id="r1", tags=tags, asset_selection=selection)

    def hours(result) -> tuple[str, str]:
        assert isinstance(result, RunRequest)
        return result.tags[RANGE_START_TAG], result.tags[RANGE_END_TAG]

    now = datetime(2017, 3, 1, 12, 40)  # the last hour that has ended is 11:00 .. 12:00
    # one partition: X-24 .. X+1
    assert hours(sessions_refresh_request(run({PARTITION_NAME_TAG: "2017-02-10-05:00"}), now)) == (
        "2017-02-09-05:00", "2017-02-10-06:00")
    # the partitions start on 2017-01-01 00:00
    assert hours(sessions_refresh_request(run({PARTITION_NAME_TAG: "2017-01-01-05:00"}), now)) == (
        "2017-01-01-00:00", "2017-01-01-06:00")
    # 12:00 has not ended at 12:40: the refresh stops at 11:00
    assert hours(sessions_refresh_request(run({RANGE_START_TAG: "2017-03-01-10:00", RANGE_END_TAG: "2017-03-01-11:00"},
                                              frozenset({AssetKey("cleaned_events"), AssetKey("raw_events")})),
                                          now)) == ("2017-02-28-10:00", "2017-03-01-11:00")
    # a run without cleaned_events, or without a partition, requests nothing
    assert isinstance(sessions_refresh_request(run({PARTITION_NAME_TAG: "2017-02-10-05:00"},
                                                   frozenset({AssetKey("rejected_without_hour")})), now), SkipReason)
    assert isinstance(sessions_refresh_request(run({}), now), SkipReason)
