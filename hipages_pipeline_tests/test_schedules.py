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
    ScheduleDefinition,
    build_schedule_context,
)

from hipages_pipeline.defs.automation.hours_sensor import build_landed_hours_sensor
from hipages_pipeline.defs.automation.schedules import (
    AUTOMATION_ENV,
    DELAY_ENV,
    SCHEDULE_NAME,
    automation_enabled,
    build_hourly_schedule,
    schedule_delay_minutes,
)
from hipages_pipeline.defs.automation.sensors import build_landing_files_sensor, build_sessions_refresh_sensor
from hipages_pipeline.defs.partitions import hourly_partitions

UTC = timezone.utc


def resolved(schedule) -> tuple[ScheduleDefinition, Definitions]:
    """The schedule as the code location resolves it against the job's partitions, and its Definitions."""
    from hipages_pipeline.definitions import defs

    definitions = Definitions(assets=defs.assets, jobs=defs.jobs, schedules=[schedule], resources=defs.resources)
    return definitions.resolve_schedule_def(SCHEDULE_NAME), definitions


def evaluate(schedule, tick: datetime) -> list[RunRequest]:
    """Evaluate one tick the way the daemon does (the partition key is checked against the job)."""
    resolved_schedule, definitions = resolved(schedule)
    context = build_schedule_context(scheduled_execution_time=tick, repository_def=definitions.get_repository_def())
    return list(resolved_schedule.evaluate_tick(context).run_requests)


@pytest.mark.parametrize(("tick", "delay", "key"), [
    (datetime(2024, 5, 1, 10, 15, tzinfo=UTC), 15, "2024-05-01-09:00"),
    (datetime(2024, 5, 1, 10, 0, tzinfo=UTC), 0, "2024-05-01-09:00"),
    (datetime(2024, 5, 1, 10, 59, tzinfo=UTC), 59, "2024-05-01-09:00"),
    (datetime(2024, 5, 1, 0, 15, tzinfo=UTC), 15, "2024-04-30-23:00"),
    # an aware tick in another zone: 20:15 in Sydney (AEST, +10) is 10:15 UTC
    (datetime(2024, 5, 1, 20, 15, tzinfo=ZoneInfo("Australia/Sydney")), 15, "2024-05-01-09:00"),
])
def test_each_tick_materializes_the_hour_that_ended_delay_minutes_before(tick, delay, key):
    (request,) = evaluate(build_hourly_schedule(delay_minutes=delay, running=False), tick)
    assert request.partition_key == key


def test_tick_requests_the_last_completed_hour_as_a_partition_run():
    unresolved = build_hourly_schedule(delay_minutes=15, running=False)
    schedule, _ = resolved(unresolved)
    assert schedule.cron_schedule == "15 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "hipages_etl_job"
    tick = datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    # one run only: the sessions refresh is the run-status sensor's (test_sensors.py)
    (request,) = evaluate(unresolved, tick)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2024-05-01-09:00"
    assert request.run_key == "2024-05-01-09:00"
    assert request.asset_selection is None
    assert request.tags["hipages/trigger"] == "schedule"
    assert hourly_partitions.time_window_for_partition_key(request.partition_key).end == tick.replace(minute=0)


def test_a_delay_of_an_hour_or_more_is_refused():
    # build_schedule_from_partitioned_job runs the last ended hour: no offset for longer delays
    for delay in (60, 90, -1):
        with pytest.raises(ValueError, match=rf"{DELAY_ENV}={delay!r}: expected whole minutes in 0 \.\. 59"):
            build_hourly_schedule(delay_minutes=delay, running=False)


def test_automation_is_off_by_default(monkeypatch):
    monkeypatch.delenv(AUTOMATION_ENV, raising=False)
    monkeypatch.delenv(DELAY_ENV, raising=False)
    assert build_hourly_schedule().default_status == DefaultScheduleStatus.STOPPED
    assert build_landing_files_sensor().default_status == DefaultSensorStatus.STOPPED
    assert build_sessions_refresh_sensor().default_status == DefaultSensorStatus.STOPPED
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
    assert (build_landed_hours_sensor().default_status == DefaultSensorStatus.RUNNING) is sensor_on
    # the sessions refresh follows the runs of either
    assert (build_sessions_refresh_sensor().default_status == DefaultSensorStatus.RUNNING) is (schedule_on or sensor_on)


def test_bad_settings_fail_loudly(monkeypatch):
    monkeypatch.setenv(AUTOMATION_ENV, "sensors")
    with pytest.raises(ValueError, match="unknown"):
        automation_enabled("sensor")
    for bad in ("-5", "60", "90", "1440", "soon"):
        monkeypatch.setenv(DELAY_ENV, bad)
        with pytest.raises(ValueError, match=DELAY_ENV):
            schedule_delay_minutes()
    monkeypatch.setenv(DELAY_ENV, "45")
    assert resolved(build_hourly_schedule(running=False))[0].cron_schedule == "45 * * * *"


def test_definitions_register_the_schedule_and_the_sensor():
    from hipages_pipeline.definitions import defs

    assert defs.resolve_schedule_def("hipages_hourly_schedule").job_name == "hipages_etl_job"
    assert defs.resolve_sensor_def("hipages_landing_files_sensor").job_name == "hipages_landing_job"
    assert defs.resolve_sensor_def("hipages_landed_hours_sensor").job_name == "hipages_etl_job"
    assert defs.resolve_sensor_def("hipages_sessions_refresh_sensor").job_name == "hipages_etl_job"
    assert defs.resolve_job_def("hipages_etl_job").tags["hipages/duckdb-writer"]
