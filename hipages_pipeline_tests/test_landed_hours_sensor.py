"""The landed-hours sensor after real landing runs (``hipages_landing_job`` in process on an
ephemeral instance), with its clock fixed: it requests the hourly runs of exactly the hours of
the landed lines, once those hours have ended."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    MetadataValue,
    SensorResult,
    build_sensor_context,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as RANGE_END_TAG,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_START_TAG as RANGE_START_TAG,
)

from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.automation import hours_sensor
from hipages_pipeline.defs.automation.hours_sensor import build_landed_hours_sensor, parse_cursor
from hipages_pipeline.defs.automation.sensors import SETTLE_ENV, epoch_ns, settle_seconds
from hipages_pipeline.defs.resources import EventSource, make_resources
from hipages_pipeline_tests.test_sensors import (  # noqa: F401 (landing: the same fixture)
    NOW,
    OLD,
    event,
    landing,
    tick,
    write,
)

HOURS_SENSOR = build_landed_hours_sensor(running=False)


def land(defs: Definitions, instance: DagsterInstance, landing: Path, cursor: str | None) -> tuple[str, int]:
    """One tick of the landing-files sensor and its landing runs, executed; (its cursor, runs)."""
    result = tick(instance, landing, cursor)
    job = defs.resolve_job_def("hipages_landing_job")
    for request in result.run_requests:
        assert job.execute_in_process(instance=instance, tags=request.tags, partition_key=request.partition_key).success
    return result.cursor, len(result.run_requests)


def hours_tick(instance: DagsterInstance, cursor: str | None, monkeypatch, now: datetime) -> SensorResult:
    """One tick of the landed-hours sensor at ``now`` (naive UTC)."""
    monkeypatch.setattr(hours_sensor, "utc_now", lambda: now)
    result = HOURS_SENSOR(build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, SensorResult)
    return result


def ranges(result: SensorResult) -> list[tuple[str, str]]:
    """The requested hours as (first, last) partition keys."""
    assert all(r.tags["hipages/trigger"] == "landed-hours-sensor" and not r.partition_key for r in result.run_requests)
    return [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in result.run_requests or []]


def test_landed_hours_are_requested_once_ended(landing, tmp_path, monkeypatch, query):
    # hours of the lines, by hand: a.json 2017-02-02 20:00 and 21:00 (and a line without an hour),
    # b.json 2017-02-02 23:00 and 2017-02-03 08:00, which has not ended at 08:30
    write(landing / "a.json", event("1", "02/02/2017 20:22:00"), event("2", "02/02/2017 21:05:00"), "{oops")
    write(landing / "b.json", event("3", "02/02/2017 23:40:00"), event("4", "03/02/2017 08:10:00"))
    defs = build_definitions(make_resources(EventSource(source_glob=str(landing / "*.json")), str(tmp_path / "out")))
    instance = DagsterInstance.ephemeral()
    landing_cursor, runs = land(defs, instance, landing, None)
    assert runs == 1  # both files in one ranged run: two landed_files events with the same hours
    after, keys, read = hours_sensor.landed_hours(build_sensor_context(instance=instance), None)
    assert read == 2 and after is not None
    assert keys == {"2017-02-02-20:00", "2017-02-02-21:00", "2017-02-02-23:00", "2017-02-03-08:00"}
    first = hours_tick(instance, None, monkeypatch, datetime(2017, 2, 3, 8, 30))
    assert ranges(first) == [("2017-02-02-20:00", "2017-02-02-21:00"), ("2017-02-02-23:00", "2017-02-02-23:00")]
    assert parse_cursor(first.cursor)[1] == {"2017-02-03-08:00"}
    assert len(first.cursor) < 200
    replay = hours_tick(instance, None, monkeypatch, datetime(2017, 2, 3, 8, 30))
    assert [r.run_key for r in replay.run_requests] == [r.run_key for r in first.run_requests]
    waiting = hours_tick(instance, first.cursor, monkeypatch, datetime(2017, 2, 3, 8, 59))
    assert not waiting.run_requests and "waiting: 2017-02-03-08:00" in waiting.skip_reason.skip_message
    ended = hours_tick(instance, waiting.cursor, monkeypatch, datetime(2017, 2, 3, 9, 0))
    assert ranges(ended) == [("2017-02-03-08:00", "2017-02-03-08:00")]
    assert parse_cursor(ended.cursor)[1] == set()
    assert not hours_tick(instance, ended.cursor, monkeypatch, datetime(2017, 2, 3, 10, 0)).run_requests
    # the requested hourly run materializes those hours from the landed lines
    etl = defs.resolve_job_def("hipages_etl_job")
    assert etl.execute_in_process(instance=instance, tags=first.run_requests[0].tags).success
    hours = query(tmp_path / "out", "SELECT strftime(time_stamp, '%Y%m%d%H') AS h, count(*) AS n "
                                   "FROM {s}.cleaned_events GROUP BY 1 ORDER BY 1")
    assert hours.values.tolist() == [["2017020220", 1], ["2017020221", 1]]
    # a.json rewritten: its hours before (20:00, 21:00) and after (2017-02-05 10:00) are redone
    write(landing / "a.json", event("5", "05/02/2017 10:15:00"), mtime_ns=OLD + 10**9)
    _, runs = land(defs, instance, landing, landing_cursor)
    assert runs == 1
    again = hours_tick(instance, ended.cursor, monkeypatch, datetime(2017, 2, 6))
    assert ranges(again) == [("2017-02-02-20:00", "2017-02-02-21:00"), ("2017-02-05-10:00", "2017-02-05-10:00")]
    assert not hours_tick(instance, again.cursor, monkeypatch, datetime(2017, 2, 6)).run_requests


def test_no_landing_yet_requests_nothing(monkeypatch):
    result = hours_tick(DagsterInstance.ephemeral(), None, monkeypatch, datetime(2017, 2, 3))
    assert not result.run_requests and "0 landed_files event(s)" in result.skip_reason.skip_message
    assert parse_cursor("not json") == (None, set())
    assert epoch_ns(datetime(1970, 1, 1, 0, 0, 1)) == 10**9


def test_runs_per_tick_cap_keeps_the_rest_pending(monkeypatch):
    instance = DagsterInstance.ephemeral()
    hours = [["2017-02-02-20:00..2017-02-02-21:00", "2017-02-05-10:00"],  # a ranged landing: same hours twice
             ["2017-02-02-20:00..2017-02-02-21:00", "2017-02-05-10:00"],
             ["2017-03-01-00:00..2017-03-02-03:00"]]  # 28 hours: 24 + 4
    for number, value in enumerate(hours):
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key="landed_files", partition=f"/landing/f{number}.json", metadata={"hours": MetadataValue.json(value)}))
    monkeypatch.setattr(hours_sensor, "MAX_RUNS_PER_TICK", 2)
    now = datetime(2017, 4, 1)
    first = hours_tick(instance, None, monkeypatch, now)
    assert ranges(first) == [("2017-02-02-20:00", "2017-02-02-21:00"), ("2017-02-05-10:00", "2017-02-05-10:00")]
    assert json.loads(first.cursor)["pending"] == ["2017-03-01-00:00..2017-03-02-03:00"]
    second = hours_tick(instance, first.cursor, monkeypatch, now)
    assert ranges(second) == [("2017-03-01-00:00", "2017-03-01-23:00"), ("2017-03-02-00:00", "2017-03-02-03:00")]
    assert json.loads(second.cursor)["pending"] == []
    assert not hours_tick(instance, second.cursor, monkeypatch, now).run_requests


def test_a_bad_settle_interval_fails_loudly(monkeypatch):
    monkeypatch.setenv(SETTLE_ENV, "soon")
    with pytest.raises(ValueError, match=SETTLE_ENV):
        settle_seconds()
    monkeypatch.setenv(SETTLE_ENV, "5")
    assert settle_seconds() == 5
    monkeypatch.delenv(SETTLE_ENV)
    assert settle_seconds() == 60
