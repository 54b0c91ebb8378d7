"""The lake tests' services work: a Dagster instance on PostgreSQL records runs, and Delta tables on
the S3 endpoint take concurrent commits of disjoint hours (services.py starts or finds both)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import psycopg2
import pyarrow as pa
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, job, op
from deltalake import DeltaTable, write_deltalake

from hipages_pipeline_tests.services import (
    dagster_postgres_storage,
    fresh_postgres_database,
    lake_bucket,  # noqa: F401
    postgres_url,  # noqa: F401
    s3_endpoint,  # noqa: F401
    unavailable,
)


@op
def one() -> int:
    return 1


@job
def tiny_job():
    one()


def test_dagster_instance_on_postgres_records_runs(postgres_url, tmp_path):
    url = fresh_postgres_database(postgres_url)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": dagster_postgres_storage(url)}))
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = tiny_job.execute_in_process(instance=instance)
        assert result.success
        runs = instance.get_runs()
        assert [(r.run_id, r.job_name, r.status) for r in runs] == [
            (result.run_id, "tiny_job", DagsterRunStatus.SUCCESS)]
    finally:
        instance.dispose()
    # The run is in PostgreSQL itself, not in a local file.
    con = psycopg2.connect(url)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT run_id FROM runs")
            assert cur.fetchall() == [(result.run_id,)]
    finally:
        con.close()


def hour_rows(hour: datetime, tag: str) -> pa.Table:
    """Six rows in ``hour`` (naive timestamps, every 10 minutes), each tagged ``tag``."""
    times = [hour + timedelta(minutes=m) for m in range(0, 60, 10)]
    return pa.table({"ts": pa.array(times, pa.timestamp("us")), "tag": [tag] * len(times)})


def hour_predicate(hour: datetime) -> str:
    return f"ts >= '{hour:%Y-%m-%d %H:%M:%S}' AND ts < '{hour + timedelta(hours=1):%Y-%m-%d %H:%M:%S}'"


def test_delta_on_s3_takes_concurrent_overwrites_of_disjoint_hours(lake_bucket):
    uri = f"s3://{lake_bucket.bucket}/t"
    options = lake_bucket.env
    hours = [datetime(2017, 2, 2, h) for h in (20, 21, 22)]
    for hour in hours:  # one commit (and so one file) per hour, as the pipeline writes
        write_deltalake(uri, hour_rows(hour, "old"), mode="append", storage_options=options)
    assert DeltaTable(uri, storage_options=options).version() == 2

    # Two writers replace hours 20 and 21 at the same moment.
    barrier, errors = threading.Barrier(2), []

    def replace(hour: datetime) -> None:
        try:
            barrier.wait(timeout=30)
            write_deltalake(uri, hour_rows(hour, "new"), mode="overwrite", predicate=hour_predicate(hour),
                            storage_options=options)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writers = [threading.Thread(target=replace, args=(hour,)) for hour in hours[:2]]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert not any(w.is_alive() for w in writers), "a writer did not finish within 120 s"
    assert errors == []

    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 4, "both overwrites committed, one version each"
    assert [c["operation"] for c in table.history()][:2] == ["WRITE", "WRITE"]
    got = table.to_pyarrow_table()
    assert got.schema.field("ts").type == pa.timestamp("us")  # still naive (timestamp_ntz)
    expected = sorted(
        [(hours[0] + timedelta(minutes=m), "new") for m in range(0, 60, 10)]
        + [(hours[1] + timedelta(minutes=m), "new") for m in range(0, 60, 10)]
        + [(hours[2] + timedelta(minutes=m), "old") for m in range(0, 60, 10)])
    assert sorted(zip(got["ts"].to_pylist(), got["tag"].to_pylist())) == expected


def test_a_missing_service_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not installed"):
        unavailable("PostgreSQL is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        unavailable("PostgreSQL is not installed")
