"""The hourly schedule: which hour each tick materializes, and the automation switch."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    build_schedule_context,
)

from hipages_pipeline.defs.automation.jobs import SESSION_ASSETS
from hipages_pipeline.defs.automation.schedules import (
    AUTOMATION_ENV,
    DELAY_ENV,
    automation_enabled,
    build_hourly_schedule,
    hour_to_materialize,
    schedule_delay_minutes,
)
from hipages_pipeline.defs.automation.sensors import build_landing_files_sensor
from hipages_pipeline.defs.partitions import hourly_partitions

UTC = timezone.utc


def evaluate(schedule, tick: datetime) -> list[RunRequest]:
    """Evaluate one tick the way the daemon does (the partition key is checked against the job)."""
    from hipages_pipeline.definitions import defs

    repository = Definitions(assets=defs.assets, jobs=defs.jobs, schedules=[schedule],
                             resources=defs.resources).get_repository_def()
    context = build_schedule_context(scheduled_execution_time=tick, repository_def=repository)
    return list(schedule.evaluate_tick(context).run_requests)


@pytest.mark.parametrize(("tick", "delay", "hour"), [
    (datetime(2024, 5, 1, 10, 15, tzinfo=UTC), 15, datetime(2024, 5, 1, 9)),
    (datetime(2024, 5, 1, 10, 0, tzinfo=UTC), 0, datetime(2024, 5, 1, 9)),
    (datetime(2024, 5, 1, 10, 30, tzinfo=UTC), 90, datetime(2024, 5, 1, 8)),
    (datetime(2024, 5, 1, 0, 15, tzinfo=UTC), 15, datetime(2024, 4, 30, 23)),
    # an aware tick in another zone: 20:15 in Sydney (AEST, +10) is 10:15 UTC
    (datetime(2024, 5, 1, 20, 15, tzinfo=ZoneInfo("Australia/Sydney")), 15, datetime(2024, 5, 1, 9)),
    (datetime(2024, 5, 1, 10, 15), 15, datetime(2024, 5, 1, 9)),  # naive = UTC
])
def test_hour_to_materialize_is_the_hour_that_ended_delay_minutes_before(tick, delay, hour):
    assert hour_to_materialize(tick, delay) == hour


def test_tick_requests_the_last_completed_hour_as_a_partition_run():
    schedule = build_hourly_schedule(delay_minutes=15, running=False)
    assert schedule.cron_schedule == "15 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "hipages_etl_job"
    tick = datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    request, refresh = evaluate(schedule, tick)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2024-05-01-09:00"
    assert request.run_key == "2024-05-01-09:00"
    assert hourly_partitions.time_window_for_partition_key(request.partition_key).end == tick.replace(minute=0)
    # then the sessions of the 24 hours before, which may continue into 09:00, are redone
    assert refresh.asset_selection == SESSION_ASSETS
    assert (refresh.tags["dagster/asset_partition_range_start"], refresh.tags["dagster/asset_partition_range_end"]) == (
        "2024-04-30-09:00", "2024-05-01-09:00")


def test_delay_longer_than_an_hour_ticks_at_the_remaining_minutes():
    schedule = build_hourly_schedule(delay_minutes=90, running=False)
    assert schedule.cron_schedule == "30 * * * *"
    tick = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert evaluate(schedule, tick)[0].partition_key == "2024-05-01-08:00"


def test_automation_is_off_by_default(monkeypatch):
    monkeypatch.delenv(AUTOMATION_ENV, raising=False)
    monkeypatch.delenv(DELAY_ENV, raising=False)
    assert build_hourly_schedule().default_status == DefaultScheduleStatus.STOPPED
    assert build_landing_files_sensor().default_status == DefaultSensorStatus.STOPPED
    assert schedule_delay_minutes() == 15


@pytest.mark.parametrize(("value", "schedule_on", "sensor_on"), [
    ("on", True, True), ("1", True, True), ("all", True, True), ("off", False, False),
    ("schedule", True, False), ("sensor", False, True), ("schedule, sensor", True, True),
])
def test_one_switch_turns_automation_on(monkeypatch, value, schedule_on, sensor_on):
    monkeypatch.setenv(AUTOMATION_ENV, value)
    assert automation_enabled("schedule") is schedule_on
    assert automation_enabled("sensor") is sensor_on
    running = {True: DefaultScheduleStatus.RUNNING, False: DefaultScheduleStatus.STOPPED}
    assert build_hourly_schedule().default_status == running[schedule_on]
    assert (build_landing_files_sensor().default_status == DefaultSensorStatus.RUNNING) is sensor_on


def test_bad_settings_fail_loudly(monkeypatch):
    monkeypatch.setenv(AUTOMATION_ENV, "sensors")
    with pytest.raises(ValueError, match="unknown"):
        automation_enabled("sensor")
    for bad in ("-5", "1440", "soon"):
        monkeypatch.setenv(DELAY_ENV, bad)
        with pytest.raises(ValueError, match=DELAY_ENV):
            schedule_delay_minutes()
    monkeypatch.setenv(DELAY_ENV, "45")
    assert build_hourly_schedule(running=False).cron_schedule == "45 * * * *"


def test_definitions_register_the_schedule_and_the_sensor():
    from hipages_pipeline.definitions import defs

    assert defs.resolve_schedule_def("hipages_hourly_schedule").job_name == "hipages_etl_job"
    assert defs.resolve_sensor_def("hipages_landing_files_sensor").job_name == "hipages_etl_job"
    assert defs.resolve_job_def("hipages_etl_job").tags["hipages/duckdb-writer"]
