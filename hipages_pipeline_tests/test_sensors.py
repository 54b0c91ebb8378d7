"""The landing-files sensor, evaluated with ``build_sensor_context`` on temporary landing folders
and an ephemeral instance (its ``source_files`` partitions), the clock fixed; and the sessions
refresh sensor, evaluated with ``build_run_status_sensor_context`` on real runs."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timedelta
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
    instance_for_test,
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
from dagster._serdes import serialize_value

from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.automation import sensors
from hipages_pipeline.defs.automation.jobs import SESSION_ASSETS
from hipages_pipeline.defs.automation.sensors import (
    SESSIONS_SENSOR_NAME,
    build_landing_files_sensor,
    build_sessions_refresh_sensor,
    epoch_ns,
    sessions_refresh_request,
)
from hipages_pipeline.defs.partitions import range_tags, source_file_partitions
from hipages_pipeline.defs.resources import EventSource, make_resources
from hipages_pipeline.lib.landing_files import FileStat, LandingCursor, plan_landing

SETTLE = 60
SENSOR = build_landing_files_sensor(running=False, settle=SETTLE)
SESSIONS_SENSOR = build_sessions_refresh_sensor(running=False)
NOW = datetime(2024, 5, 1, 12, 0)
"""The sensors' clock in these tests (naive UTC)."""
OLD = epoch_ns(NOW - timedelta(hours=1))
"""An mtime (ns) long settled at ``NOW``."""


def event(event_id: str, when: str, user: int = 1) -> str:
    """One valid source line; ``when`` is ``DD/MM/YYYY HH:MM:SS`` (UTC)."""
    return json.dumps({"event_id": event_id, "user": {"session_id": "1", "id": user, "ip": "10.1.2.3"},
                       "action": "page_view", "url": "https://www.hipages.com.au/articles", "timestamp": when})


def write(path: Path, *lines: str, mtime_ns: int = OLD) -> Path:
    """Write ``lines`` to ``path`` and set its mtime (ns since the epoch)."""
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def landing(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(sensors, "utc_now", lambda: NOW)
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def tick(instance: DagsterInstance, landing: Path, cursor: str | None = None, sensor=SENSOR) -> SensorResult:
    """Evaluate the sensor once, as the daemon would with the stored cursor (the tick adds the new
    partitions to the instance itself: it requests none)."""
    context = build_sensor_context(instance=instance, cursor=cursor,
                                   resources={"source": EventSource(source_glob=str(landing / "*.json"))})
    result = sensor(context)
    assert isinstance(result, SensorResult)
    assert not result.dynamic_partitions_requests
    return result


def files_of(instance: DagsterInstance, result: SensorResult) -> list[list[str]]:
    """The files of each requested landing run, from its partition key or range tags."""
    order = instance.get_dynamic_partitions(source_file_partitions.name)
    runs = []
    for request in result.run_requests or []:
        assert isinstance(request, RunRequest) and request.tags["hipages/trigger"] == "landing-files-sensor"
        if request.partition_key:
            assert RANGE_START_TAG not in request.tags
            runs.append([request.partition_key])
        else:
            first, last = order.index(request.tags[RANGE_START_TAG]), order.index(request.tags[RANGE_END_TAG])
            assert first < last
            runs.append(order[first:last + 1])
    return runs


def names(runs: list[list[str]]) -> list[list[str]]:
    return [[Path(path).name for path in run] for run in runs]


def test_twelve_thousand_files_cost_a_few_kb(landing, capsys):
    paths = [write(landing / f"f{i:05d}.json", event(str(i), "02/02/2017 20:22:00"), mtime_ns=OLD + i)
             for i in range(12_000)]
    instance = DagsterInstance.ephemeral()
    started = time.perf_counter()
    first = tick(instance, landing)
    seconds = time.perf_counter() - started
    requests = serialize_value(list(first.run_requests))
    added = instance.get_dynamic_partitions(source_file_partitions.name)
    with capsys.disabled():
        print(f"\n12,000 files: first tick {seconds:.2f} s, cursor {len(first.cursor)} B, "
              f"{len(first.run_requests)} run requests {len(requests)} B")
    assert len(first.cursor) < 4096 and len(requests) < 4096
    assert added == sorted(str(p) for p in paths)
    runs = files_of(instance, first)
    assert len(runs) == math.ceil(12_000 / sensors.MAX_FILES_PER_RUN) == 3
    assert [len(run) for run in runs] == [5000, 5000, 2000]
    assert sorted(path for run in runs for path in run) == sorted(str(p) for p in paths)  # each file once
    # nothing changed: nothing requested, nothing added, and the cursor stays the same
    second = tick(instance, landing, first.cursor)
    assert not second.run_requests and len(instance.get_dynamic_partitions(source_file_partitions.name)) == 12_000
    assert "12000 unchanged" in second.skip_reason.skip_message and second.cursor == first.cursor
    # one file rewritten (its new mtime older than the settle interval): exactly that file
    write(paths[4321], event("x", "03/02/2017 08:00:00"), mtime_ns=epoch_ns(NOW) - 5 * 10**9 * SETTLE)
    third = tick(instance, landing, second.cursor)
    assert names(files_of(instance, third)) == [["f04321.json"]]
    assert len(instance.get_dynamic_partitions(source_file_partitions.name)) == 12_000
    assert third.run_requests[0].partition_key == str(paths[4321])
    # a replayed tick (same cursor, same files) gives the same run keys: Dagster launches nothing twice
    replay = tick(instance, landing, second.cursor)
    assert [r.run_key for r in replay.run_requests] == [r.run_key for r in third.run_requests]
    assert not tick(instance, landing, third.cursor).run_requests


def test_a_file_waits_until_its_mtime_is_older_than_the_settle_interval(landing, monkeypatch):
    instance = DagsterInstance.ephemeral()
    write(landing / "done.json", event("1", "02/02/2017 20:22:00"))
    busy = write(landing / "busy.json", event("2", "02/02/2017 20:23:00"), mtime_ns=epoch_ns(NOW) - 10**9)
    first = tick(instance, landing)
    assert names(files_of(instance, first)) == [["done.json"]]
    assert instance.get_dynamic_partitions(source_file_partitions.name) == [str(landing / "done.json")]
    second = tick(instance, landing, first.cursor)  # 1 s old: still settling, not even a partition yet
    assert not second.run_requests and "1 changed within the last 60 s (settling)" in second.skip_reason.skip_message
    assert instance.get_dynamic_partitions(source_file_partitions.name) == [str(landing / "done.json")]
    monkeypatch.setattr(sensors, "utc_now", lambda: NOW + timedelta(seconds=SETTLE))
    third = tick(instance, landing, second.cursor)
    assert files_of(instance, third) == [[str(busy)]]
    # a known file being written again waits too, then is landed once
    write(busy, event("3", "02/02/2017 20:24:00"), mtime_ns=epoch_ns(NOW + timedelta(seconds=SETTLE)) - 10**9)
    assert not tick(instance, landing, third.cursor).run_requests
    monkeypatch.setattr(sensors, "utc_now", lambda: NOW + timedelta(seconds=3 * SETTLE))
    fourth = tick(instance, landing, third.cursor)
    assert files_of(instance, fourth) == [[str(busy)]]
    assert not tick(instance, landing, fourth.cursor).run_requests


def test_caps_spread_a_backlog_over_ticks_without_losing_or_repeating_a_file(landing):
    small = build_landing_files_sensor(running=False, settle=SETTLE, max_files_per_run=2, max_runs_per_tick=2)
    instance = DagsterInstance.ephemeral()
    paths = [write(landing / f"f{i}.json", event(str(i), "02/02/2017 20:22:00"), mtime_ns=OLD + i) for i in range(7)]
    seen, cursor = [], None
    for _ in range(3):
        result = tick(instance, landing, cursor, small)
        runs = files_of(instance, result)
        assert len(runs) <= 2 and all(len(run) <= 2 for run in runs)
        seen += [path for run in runs for path in run]
        cursor = result.cursor
    assert seen == [str(p) for p in paths]  # oldest first, each once
    assert not tick(instance, landing, cursor, small).run_requests
    # files changed apart from each other in the partitions' order: one run each, two per tick
    for number in (5, 1, 3):
        write(paths[number], event("y", "04/02/2017 10:00:00"), mtime_ns=OLD + 1000 + number)
    first = tick(instance, landing, cursor, small)
    assert names(files_of(instance, first)) == [["f1.json"], ["f3.json"]]
    second = tick(instance, landing, first.cursor, small)
    assert names(files_of(instance, second)) == [["f5.json"]]
    assert not tick(instance, landing, second.cursor, small).run_requests


def test_unlandable_paths_are_skipped_and_reported_once(landing):
    instance = DagsterInstance.ephemeral()
    write(landing / "good.json", event("1", "02/02/2017 20:22:00"))
    write(landing / "it's.json", event("2", "02/02/2017 20:22:00"))
    first = tick(instance, landing)
    assert names(files_of(instance, first)) == [["good.json"]]
    second = tick(instance, landing, first.cursor)
    assert not second.run_requests and "1 cannot be landed" in second.skip_reason.skip_message
    # the reason is reported (logged) on the first tick that sees the path only
    files = [FileStat(str(landing / "good.json"), 10, OLD), FileStat(str(landing / "it's.json"), 10, OLD)]
    plan = plan_landing(files, [], LandingCursor(), epoch_ns(NOW), 10, 10, sensors.unlandable)
    assert len(plan.refused) == 1 and "it's.json" in plan.refused[0] and plan.add == [files[0].path]
    assert plan_landing(files, plan.add, plan.cursor, epoch_ns(NOW), 10, 10, sensors.unlandable).refused == []


def test_no_matching_file_skips_and_a_broken_cursor_starts_over(landing):
    instance = DagsterInstance.ephemeral()
    assert "No source file matches" in tick(instance, landing).skip_reason.skip_message
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"))
    first = tick(instance, landing)
    assert not tick(instance, landing, first.cursor).run_requests
    assert files_of(instance, tick(instance, landing, "not json")) == [[str(landing / "a.json")]]
    (landing / "a.json").unlink()
    gone = tick(instance, landing, first.cursor)
    assert "No source file matches" in gone.skip_reason.skip_message


def test_requested_landing_runs_land_the_files(landing, tmp_path, query):
    instance = DagsterInstance.ephemeral()
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 21:05:00"), "{oops")
    write(landing / "b.json", event("3", "03/02/2017 08:00:00"))
    result = tick(instance, landing)
    resources = make_resources(EventSource(source_glob=str(landing / "*.json")), str(tmp_path / "out"))
    job = build_definitions(resources).resolve_job_def(sensors.hipages_landing_job.name)
    (request,) = result.run_requests
    assert job.execute_in_process(instance=instance, tags=request.tags, partition_key=request.partition_key).success
    landed = query(tmp_path / "out", "SELECT source_file, lines, events, rejected FROM {s}.landed_files ORDER BY 1")
    assert landed.values.tolist() == [[str(landing / "a.json"), 3, 2, 1], [str(landing / "b.json"), 1, 1, 0]]


def refresh_after(run: DagsterRun, instance: DagsterInstance, success_event) -> RunRequest | SkipReason:
    """Evaluate the sessions refresh sensor for a succeeded run, as the daemon does."""
    context = build_run_status_sensor_context(sensor_name=SESSIONS_SENSOR_NAME, dagster_event=success_event,
                                              dagster_instance=instance, dagster_run=run)
    return SESSIONS_SENSOR(context)


def test_sessions_refresh_follows_a_succeeded_run_and_not_its_own(landing, tmp_path, query, monkeypatch):
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 21:05:00", user=2))
    resources = make_resources(EventSource(source_glob=str(landing / "*.json")), str(tmp_path / "out"))
    defs = build_definitions(resources)
    job = defs.resolve_job_def("hipages_etl_job")
    instance = DagsterInstance.ephemeral()
    (landing_request,) = tick(instance, landing).run_requests
    assert defs.resolve_job_def("hipages_landing_job").execute_in_process(
        instance=instance, partition_key=landing_request.partition_key).success
    # a ranged run of hours 20:00 .. 21:00, as the landed-hours sensor requests it
    etl = job.execute_in_process(instance=instance, tags=range_tags(datetime(2017, 2, 2, 20), datetime(2017, 2, 2, 21)))
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


def test_the_daemon_resolves_the_requests_of_new_partitions(landing):
    # evaluate_tick validates a partition_key against the instance's partitions, which the tick
    # added itself (a persistent instance, as in the daemon)
    from hipages_pipeline.definitions import defs

    write(landing / "a.json", event("1", "02/02/2017 20:22:00"))
    sensor = defs.resolve_sensor_def(sensors.SENSOR_NAME)
    assert sensor.job_name == "hipages_landing_job"
    with instance_for_test() as instance:
        context = build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs,
                                       resources={"source": EventSource(source_glob=str(landing / "*.json"))})
        data = sensor.evaluate_tick(context)
        partitions = instance.get_dynamic_partitions(source_file_partitions.name)
    (request,) = data.run_requests
    assert request.tags[PARTITION_NAME_TAG] == str(landing / "a.json")
    assert request.tags["dagster/sensor_name"] == sensors.SENSOR_NAME
    assert not data.dynamic_partitions_requests and partitions == [str(landing / "a.json")]
