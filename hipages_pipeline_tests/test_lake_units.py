"""The delta storage's small parts, without a pipeline run: predicates of a slice, storage
settings, the lake URI, a write replacing exactly its slice, scratch files of dead processes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import duckdb
import pytest
from dagster import TimeWindow
from dagster._core.storage.db_io_manager import TablePartitionDimension, TableSlice

from hipages_pipeline.defs.lake_tables import attach_lake, book_predicate, slice_predicate
from hipages_pipeline.defs.resources import storage_settings
from hipages_pipeline.lib.processes import host_name
from hipages_pipeline.lib.storage.duckdb_files import SCRATCH_PREFIX, remove_dead_scratch_files, scratch_database
from hipages_pipeline.lib.storage.lake import Lake, LakeError, arrow_schema, check_lake_uri, storage_options

WINDOW = TimeWindow(datetime(2017, 2, 2, 20), datetime(2017, 2, 2, 23))


def _slice(table: str, expr: str, partitions) -> TableSlice:
    return TableSlice(table=table, schema="analytics", database=None,
                      partition_dimensions=[TablePartitionDimension(expr, partitions)])


def test_a_time_window_is_a_half_open_range_on_the_partition_column():
    assert slice_predicate(_slice("cleaned_events", "time_stamp", WINDOW)) == (
        "\"time_stamp\" >= '2017-02-02 20:00:00' AND \"time_stamp\" < '2017-02-02 23:00:00'")


def test_hourly_activity_compares_its_text_hour_in_its_own_format():
    predicate = slice_predicate(_slice("hourly_activity", "strptime(time_bucket, '%Y%m%d%H')", WINDOW))
    assert predicate == "\"time_bucket\" >= '2017020220' AND \"time_bucket\" < '2017020223'"


def test_source_files_are_quoted_and_an_unpartitioned_table_is_replaced_whole():
    predicate = slice_predicate(_slice("landed_lines", "source_file", ["/d/a.json", "/d/o'brien.json"]))
    assert predicate == "\"source_file\" IN ('/d/a.json', '/d/o''brien.json')"
    assert slice_predicate(TableSlice(table="rejected_without_hour", schema="analytics")) is None
    assert book_predicate("user_sessions", (datetime(2017, 1, 1), datetime(2017, 1, 2))) == (
        "\"table_name\" = 'user_sessions' AND \"hour\" >= '2017-01-01 00:00:00' AND \"hour\" < '2017-01-02 00:00:00'")


def test_storage_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("HIPAGES_STORAGE", raising=False)
    monkeypatch.delenv("HIPAGES_LAKE_URI", raising=False)
    assert storage_settings() == ("duckdb", None)
    assert storage_settings("delta", str(tmp_path / "lake/")) == ("delta", str(tmp_path / "lake"))
    monkeypatch.setenv("HIPAGES_STORAGE", "Delta")
    monkeypatch.setenv("HIPAGES_LAKE_URI", "s3://bucket/prefix/")
    assert storage_settings() == ("delta", "s3://bucket/prefix")
    with pytest.raises(ValueError, match="unknown storage 'parquet'"):
        storage_settings("parquet")
    monkeypatch.delenv("HIPAGES_LAKE_URI")
    with pytest.raises(LakeError, match="HIPAGES_LAKE_URI or --lake-uri"):
        storage_settings("delta")
    with pytest.raises(LakeError, match="expected a folder or s3://"):
        check_lake_uri("gs://bucket/x")
    with pytest.raises(ValueError, match="is for the delta storage: add --storage delta"):
        storage_settings("duckdb", "/data/lake")


def test_a_lake_that_cannot_be_used_is_one_line_naming_it(tmp_path):
    from hipages_pipeline.defs.warehouse import DuckDBWarehouse

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    warehouse = DuckDBWarehouse(database=str(tmp_path / ".hipages-scratch.duckdb"), lake_uri=str(blocker / "lake"))
    with pytest.raises(LakeError, match=f"^cannot use the lake {blocker}/lake: .+") as raised:
        warehouse.check_settings()
    assert "\n" not in str(raised.value)


def test_s3_options_come_from_the_aws_variables(monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert storage_options("/local/folder") is None
    assert storage_options("s3://b/p") == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1", "conditional_put": "etag"}


def test_a_write_replaces_exactly_its_hours_and_readers_see_whole_commits(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert lake.create("t", arrow_schema([("time_stamp", "TIMESTAMP"), ("v", "BIGINT")])) is True
    assert lake.create("t", arrow_schema([("time_stamp", "TIMESTAMP"), ("v", "BIGINT")])) is False
    con = duckdb.connect()

    def hours(first: int, last: int, value: int):
        return con.execute(f"SELECT TIMESTAMP '2017-01-01' + INTERVAL (h) HOUR + INTERVAL (m) MINUTE AS time_stamp, "
                           f"{value}::BIGINT AS v FROM range({first}, {last}) a(h), range(2) b(m)").to_arrow_reader()

    assert lake.replace("t", hours(0, 4, 1), None) == 8
    before = duckdb.connect()
    lake.attach(before, ["t"])
    assert lake.replace("t", hours(1, 3, 2), "time_stamp >= '2017-01-01 01:00:00' AND time_stamp < '2017-01-01 03:00:00'") == 4
    after = duckdb.connect()
    lake.attach(after, ["t"])
    by_hour = "SELECT hour(time_stamp), count(*), sum(v) FROM analytics.t GROUP BY 1 ORDER BY 1"
    assert after.execute(by_hour).fetchall() == [(0, 2, 2), (1, 2, 4), (2, 2, 4), (3, 2, 2)]
    assert before.execute(by_hour).fetchall() == [(0, 2, 2), (1, 2, 2), (2, 2, 2), (3, 2, 2)]


def test_attach_puts_every_lake_table_behind_a_view(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    con = duckdb.connect(str(tmp_path / "scratch.duckdb"))
    con.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.cleaned_events (x INT)")
    from hipages_pipeline.defs.lake_tables import ensure_lake_tables

    assert "cleaned_events" in ensure_lake_tables(lake)
    attach_lake(con, lake)
    views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'analytics'").fetchall()}
    assert {"cleaned_events", "landed_lines", "_materialized", "_settings"} <= views
    assert con.execute("SELECT count(*) FROM analytics.cleaned_events").fetchone() == (0,)


def test_scratch_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = host_name()
    stale = tmp_path / f"{SCRATCH_PREFIX}{host}-{int(dead.stdout)}.duckdb"
    alive = scratch_database(tmp_path)
    other_host = tmp_path / f"{SCRATCH_PREFIX}container_7-{int(dead.stdout)}.duckdb"
    assert alive.name == f"{SCRATCH_PREFIX}{host}-{os.getpid()}.duckdb"
    for path in (stale, alive, other_host, stale.with_name(stale.name + ".wal")):
        path.write_bytes(b"x")
    assert remove_dead_scratch_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other_host.name])


def test_the_maintenance_job_compacts_vacuums_and_keeps_the_rows(tmp_path, monkeypatch):
    """Six hourly commits of a table are six files; the job leaves one, with the same rows, and
    vacuum deletes the replaced files and a killed writer's never-committed file once they are
    older than HIPAGES_LAKE_VACUUM_HOURS."""
    from hipages_pipeline.defs.automation.maintenance import hipages_lake_maintenance_job
    from hipages_pipeline.defs.lake_tables import ensure_lake_tables
    from hipages_pipeline.defs.warehouse import DuckDBWarehouse

    lake = Lake(str(tmp_path / "lake"))
    ensure_lake_tables(lake)
    con = duckdb.connect()
    columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in [
        ("time_bucket", "VARCHAR"), ("url_level1", "VARCHAR"), ("url_level2", "VARCHAR"), ("activity", "VARCHAR"),
        ("activity_count", "BIGINT"), ("user_count", "BIGINT")])
    for hour in range(6):
        rows = con.execute(f"SELECT * REPLACE ('201702020{hour}' AS time_bucket, {hour}::BIGINT AS activity_count) "
                           f"FROM (SELECT {columns}) t").to_arrow_reader()
        lake.replace("hourly_activity", rows, f"time_bucket = '201702020{hour}'")
    folder = tmp_path / "lake" / "hourly_activity"
    orphan = folder / "part-00000-killed-writer.parquet"
    orphan.write_bytes(b"never committed")
    old = datetime.now().timestamp() - 3 * 3600
    for path in [*folder.glob("*.parquet")]:
        os.utime(path, (old, old))
    assert len(list(folder.glob("*.parquet"))) == 7
    monkeypatch.setenv("HIPAGES_LAKE_VACUUM_HOURS", "1")
    warehouse = DuckDBWarehouse(database=str(tmp_path / "out" / ".hipages-scratch.duckdb"), lake_uri=lake.uri)
    assert hipages_lake_maintenance_job.execute_in_process(resources={"warehouse": warehouse}).success
    reader = duckdb.connect()
    lake.attach(reader, ["hourly_activity"])
    assert reader.execute("SELECT time_bucket, activity_count FROM analytics.hourly_activity ORDER BY 1").fetchall() == [
        (f"201702020{hour}", hour) for hour in range(6)]
    assert len(lake.table("hourly_activity").file_uris()) == 1
    assert not orphan.exists()
