"""An output directory keeps the source time zone of its hours, and a run removes a killed run's leftovers."""

from __future__ import annotations

import os

import duckdb
import pytest
from dagster import DagsterInstance, DagsterResourceFunctionError, Failure, build_resources

from hipages_pipeline.cli import main
from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.partitions import hour_of, range_tags
from hipages_pipeline.defs.resources import (
    DATABASE_SCHEMA,
    DuckDBWarehouse,
    EventSource,
    SourceTimezoneMismatchError,
    database_path,
    make_resources,
)
from hipages_pipeline.lib.processes import host_name
from hipages_pipeline_tests.conftest import SAMPLE, land, query_db, run_job

HOUR = "2017-02-02-20:00"


def tables(database) -> set[str]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return {f"{s}.{t}" for s, t in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()}
    finally:
        con.close()


def stored_timezone(database) -> str:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(f"SELECT value FROM {DATABASE_SCHEMA}._settings WHERE key = 'source_timezone'").fetchone()[0]
    finally:
        con.close()


def test_warehouse_refuses_another_timezone_unless_rebuilt(tmp_path):
    database = database_path(str(tmp_path))
    warehouse = DuckDBWarehouse(database=str(database))
    warehouse.claim_source_timezone("UTC")
    warehouse.claim_source_timezone("UTC")  # the same zone again: nothing to do
    with warehouse.connect() as con:
        con.execute(f"CREATE TABLE {DATABASE_SCHEMA}.cleaned_events AS SELECT range AS n FROM range(1000)")
    with pytest.raises(SourceTimezoneMismatchError) as refused:
        warehouse.claim_source_timezone("Australia/Sydney")
    assert isinstance(refused.value, ValueError)
    message = str(refused.value)
    assert "'UTC'" in message and "'Australia/Sydney'" in message and str(tmp_path) in message
    assert f"{DATABASE_SCHEMA}.cleaned_events" in tables(database) and stored_timezone(database) == "UTC"

    warehouse.claim_source_timezone("Australia/Sydney", rebuild=True)
    assert tables(database) == {f"{DATABASE_SCHEMA}._settings"}
    assert stored_timezone(database) == "Australia/Sydney"
    with pytest.raises(SourceTimezoneMismatchError):
        warehouse.claim_source_timezone("UTC")


def test_an_unknown_timezone_is_refused_and_not_stored(tmp_path):
    warehouse = DuckDBWarehouse(database=str(database_path(str(tmp_path))))
    with pytest.raises(ValueError, match="Unknown source time zone 'Mars/Olympus'"):
        warehouse.claim_source_timezone("Mars/Olympus")
    warehouse.claim_source_timezone("UTC")


def test_resources_carry_the_source_timezone_and_rebuild_into_the_warehouse(tmp_path):
    resources = make_resources(EventSource(source_timezone="Australia/Sydney"), str(tmp_path))
    assert resources["warehouse"].source_timezone == "Australia/Sydney"
    assert resources["warehouse"].rebuild is False


def test_a_dagster_run_with_another_timezone_fails_at_resource_setup(tmp_path):
    assert run_job(SAMPLE, tmp_path, HOUR).success
    rows = int(query_db(tmp_path, "SELECT count(*) AS n FROM {s}.cleaned_events")["n"][0])
    assert rows > 0
    result = run_job(SAMPLE, tmp_path, HOUR, timezone="Australia/Sydney")
    assert not result.success
    failure = result.get_run_failure_event()
    text = str(failure.event_specific_data.error.to_string() if failure.event_specific_data.error else failure.message)
    assert "'UTC'" in text and "'Australia/Sydney'" in text
    assert int(query_db(tmp_path, "SELECT count(*) AS n FROM {s}.cleaned_events")["n"][0]) == rows


def test_a_dagster_run_with_rebuild_recomputes_in_the_new_timezone(tmp_path):
    assert run_job(SAMPLE, tmp_path, HOUR).success
    # The landing run with rebuild drops every table (the landed lines' hours are of the old zone)
    # and lands the file again in the new one; the hourly run then reads those lines.
    assert land(SAMPLE, tmp_path, timezone="Australia/Sydney", rebuild=True).success
    resources = make_resources(EventSource(source_glob=str(SAMPLE), source_timezone="Australia/Sydney"), str(tmp_path))
    job = build_definitions(resources).resolve_job_def("hipages_etl_job")
    # 20:00 UTC in the file is 09:00 UTC in Sydney time: the UTC run's hour is dropped, not kept
    sydney_hour = "2017-02-02-09:00"
    assert job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False,
                                  tags=range_tags(hour_of(sydney_hour), hour_of(sydney_hour))).success
    hours = query_db(tmp_path, "SELECT DISTINCT strftime(time_stamp, '%H') AS h FROM {s}.cleaned_events")["h"].tolist()
    assert hours == ["09"]
    assert stored_timezone(database_path(str(tmp_path))) == "Australia/Sydney"


def test_cli_refuses_another_timezone_in_the_same_output_dir(sample_output_copy, capsys):
    out = sample_output_copy  # the sample run in UTC (the session's run, exit 0, copied)
    rows = int(query_db(out, "SELECT count(*) AS n FROM {s}.cleaned_events")["n"][0])
    capsys.readouterr()
    assert main(["run", "--source", str(SAMPLE), "--output-dir", str(out), "--timezone", "Australia/Sydney"]) == 2
    err = capsys.readouterr().err
    assert "'UTC'" in err and "'Australia/Sydney'" in err and str(out) in err
    assert int(query_db(out, "SELECT count(*) AS n FROM {s}.cleaned_events")["n"][0]) == rows


def test_setup_for_a_run_drops_leftover_staging_tables(tmp_path):
    database = database_path(str(tmp_path))
    con = duckdb.connect(str(database))
    con.execute("CREATE SCHEMA staging")
    con.execute("CREATE TABLE staging.user_sessions_0123456789ab AS SELECT range AS n FROM range(1000)")
    con.close()
    resources = make_resources(EventSource(), str(tmp_path))
    with build_resources(resources) as ready:
        assert "staging.user_sessions_0123456789ab" not in tables(database)
        with ready.warehouse.connect() as con, ready.warehouse.staging_table(con, "mine") as mine:
            con.execute(f"CREATE TABLE {mine} AS SELECT 1 AS n")
            # another setup in this process (e.g. the next run) keeps this process's own staging table
            with build_resources({"warehouse": resources["warehouse"]}):
                pass
            assert con.execute(f"SELECT count(*) FROM {mine}").fetchone()[0] == 1


def test_setup_for_a_run_removes_temporary_files_of_dead_processes(tmp_path):
    hour_dir = tmp_path / "event_table"
    hour_dir.mkdir(parents=True)
    host = host_name()
    dead = hour_dir / f".2017020220.csv.hipages-{host}-999999.tmp"
    alive = hour_dir / f".2017020221.csv.hipages-{host}-{os.getpid()}.tmp"
    others = [hour_dir / "2017020220.csv", tmp_path / "notes.tmp", tmp_path / ".hidden.tmp",
              hour_dir / ".2017020222.csv.999999.tmp",  # another tool's naming: never touched
              hour_dir / ".2017020223.csv.hipages-container_7-999999.tmp",  # another host's: left to it
              tmp_path / "a" / "b" / f".x.csv.hipages-{host}-999999.tmp"]  # deeper than the layout's folders
    others[-1].parent.mkdir(parents=True)
    for path in [dead, alive, *others]:
        path.write_text("x")
    with build_resources(make_resources(EventSource(), str(tmp_path))):
        pass
    assert not dead.exists()
    assert alive.exists() and all(path.exists() for path in others)


def test_setup_refuses_another_timezone_with_a_failure(tmp_path):
    DuckDBWarehouse(database=str(database_path(str(tmp_path)))).claim_source_timezone("UTC")
    resources = make_resources(EventSource(source_timezone="Australia/Sydney"), str(tmp_path))
    with pytest.raises(DagsterResourceFunctionError) as refused:
        with build_resources({"warehouse": resources["warehouse"]}):
            pass
    assert isinstance(refused.value.__cause__, Failure)
    assert "'UTC'" in refused.value.__cause__.description and "'Australia/Sydney'" in refused.value.__cause__.description


def test_cli_rebuild_recomputes_an_output_dir_in_another_timezone(sample_output_copy):
    """UTC (the session's run of the sample, exit 0, copied), then Sydney with --rebuild: exit 0,
    and the stored events are the sample's 500 at Sydney's offset (2017-02-02 20:22 local is
    09:22 UTC, daylight time +11)."""
    from hipages_pipeline.cli import main
    from hipages_pipeline_tests.conftest import SAMPLE, query_db

    out = sample_output_copy
    assert main(["run", "--source", str(SAMPLE), "--output-dir", str(out), "--timezone", "Australia/Sydney",
                 "--rebuild"]) == 0
    counts = query_db(out, "SELECT count(*) AS n, count(*) FILTER (WHERE strftime(time_stamp, '%H:%M') = '09:22') "
                           "AS at_0922 FROM {s}.cleaned_events")
    assert counts["n"].item() == 500 and counts["at_0922"].item() > 0
    # The UTC run's hour files are gone: the files on disk hold the 500 events once.
    files = sorted(path.name for path in (out / "event_table").glob("*.csv"))
    assert len(files) == 8 and "2017020220.csv" not in files and "2017020209.csv" in files
    rows = sum(len(path.read_text().splitlines()) - 1 for path in (out / "event_table").glob("*.csv"))
    assert rows == 500
