"""The ``delta`` storage: the same results as the DuckDB storage, many writers and readers at once,
and a killed writer leaves nothing half-done.

1. The sample on ``delta`` (a folder): the four CSV files are byte for byte those of the DuckDB
   storage, and ``hipages-pipeline sql`` answers on the lake.
2. 12 hourly files, on a folder and on an S3 endpoint, with the Dagster instance in PostgreSQL:
   ``hipages-pipeline run --workers 4 --max-hours-per-run 3`` lands them, then the daemon launches
   the 4 ranged runs at once, each its own process. While they run, a query loop reads the lake
   and one run worker is killed with kill -9. Then: the command succeeds, the killed run is
   FAILURE and its retry (Dagster's run retries) SUCCESS, every range succeeded exactly once, at
   most 4 runs were STARTED together and at least 2 were, every query answered, and every table
   equals the serial DuckDB result (``EXCEPT ALL`` both ways empty).
3. The same hour from two writers at once (``dagster job execute`` twice): no duplicate rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from hipages_pipeline.cli.daemon import CLI_INSTANCE_YAML
from hipages_pipeline.defs.automation.stale_runs import RUN_WORKER_TAG
from hipages_pipeline.defs.lake_tables import attach_lake
from hipages_pipeline.lib.generator import GeneratorSpec, generate
from hipages_pipeline.lib.storage.lake import Lake
from hipages_pipeline_tests.conftest import PROJECT_ROOT, SAMPLE
from hipages_pipeline_tests.services import (  # noqa: F401 (fixtures)
    dagster_postgres_storage,
    fresh_postgres_database,
    lake_bucket,
    postgres_url,
    s3_endpoint,
)

RUN_TIMEOUT = 300
CSV_FILES = ("event_table.csv", "hourly_activity.csv", "user_sessions.csv", "rejected_events.csv")
COMPARED = {  # table -> columns left out of the comparison (times of the write, not of the data)
    "landed_lines": "landed_at", "raw_events": None, "rejected_events": "rejected_at", "cleaned_events": None,
    "duplicate_events": None, "hourly_activity": None, "user_sessions": None,
}
FIRST_HOUR = datetime(2017, 3, 1)


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_HOME", "HIPAGES_"))}
    return {**env, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hipages_pipeline.cli", *args], cwd=PROJECT_ROOT, text=True,
                          capture_output=True, env=env or _env(), timeout=RUN_TIMEOUT)


def _etl_job(first: datetime, last: datetime, env: dict[str, str]) -> subprocess.Popen:
    """``dagster job execute`` of hipages_etl_job for the hours first..last (one ranged run)."""
    tags = ('{"dagster/asset_partition_range_start": "%s", "dagster/asset_partition_range_end": "%s"}'
            % (f"{first:%Y-%m-%d-%H:00}", f"{last:%Y-%m-%d-%H:00}"))
    return subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m",
                             "hipages_pipeline.definitions", "-j", "hipages_etl_job", "--tags", tags],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _differences(lake_uri: str, duckdb_file: Path) -> dict[str, tuple[int, int]]:
    """Per table: (rows only in the lake, rows only in the DuckDB file), ``EXCEPT ALL`` both ways."""
    con = duckdb.connect()
    attach_lake(con, Lake(lake_uri))
    con.execute(f"ATTACH '{duckdb_file}' AS serial (READ_ONLY)")
    found = {}
    for table, left_out in COMPARED.items():
        columns = f"* EXCLUDE ({left_out})" if left_out else "*"
        lake, serial = f"SELECT {columns} FROM analytics.{table}", f"SELECT {columns} FROM serial.analytics.{table}"
        found[table] = (con.execute(f"SELECT count(*) FROM ({lake} EXCEPT ALL {serial})").fetchone()[0],
                        con.execute(f"SELECT count(*) FROM ({serial} EXCEPT ALL {lake})").fetchone()[0])
    counts = {table: con.execute(f"SELECT count(*) FROM analytics.{table}").fetchone()[0] for table in COMPARED}
    con.close()
    return found | {"rows": counts}


def test_the_sample_on_delta_gives_the_duckdb_storage_csv_files(tmp_path, sample_outputs):
    lake = tmp_path / "lake"
    done = _cli("run", "--source", str(SAMPLE), "--output-dir", str(tmp_path / "out"), "--storage", "delta",
                "--lake-uri", str(lake))
    assert done.returncode == 0, done.stderr
    assert "500 = 500 + 0 + 0 (ok)" in done.stdout
    for name in CSV_FILES:
        assert (tmp_path / "out" / name).read_bytes() == (sample_outputs / name).read_bytes(), name
    assert not list((tmp_path / "out").glob(".hipages-scratch-*")), "the scratch database is removed at exit"
    query = _cli("sql", "SELECT count(*) AS events, count(DISTINCT user_id) AS users FROM cleaned_events",
                 "--storage", "delta", "--lake-uri", str(lake))
    assert query.returncode == 0, query.stderr
    users = len({json.loads(line)["user"]["id"] for line in SAMPLE.read_text().splitlines()})
    assert query.stdout.splitlines() == ["events,users", f"500,{users}"]


@pytest.fixture(scope="module")
def sample_outputs(tmp_path_factory) -> Path:
    """The sample's CSV files on the DuckDB storage (the reference)."""
    out = tmp_path_factory.mktemp("duckdb") / "out"
    done = _cli("run", "--source", str(SAMPLE), "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def twelve_hours(tmp_path_factory) -> tuple[Path, Path]:
    """12 hourly files of 1,500 lines each (some corrupt, some retries), and the serial result:
    the DuckDB storage's database after one ``hipages-pipeline run`` of all of them."""
    root = tmp_path_factory.mktemp("twelve")
    source = root / "source"
    source.mkdir()
    for hour in range(12):
        spec = GeneratorSpec(events=1500, start=FIRST_HOUR + timedelta(hours=hour), hours=1, anomaly_rate=0.01,
                             duplicate_rate=0.02, seed=hour)
        generate(spec, str(source / f"events-{hour:02d}.json"))
    done = _cli("run", "--source", str(source / "*.json"), "--output-dir", str(root / "serial"))
    assert done.returncode == 0, done.stderr
    return source, root / "serial" / "hipages.duckdb"


def _query_loop(lake_uri: str, stop: threading.Event, answers: list, failures: list) -> None:
    """Query the lake over and over from when its tables exist (the command creates them) to ``stop``."""
    while not stop.is_set() and Lake(lake_uri).table("cleaned_events") is None:
        time.sleep(0.2)
    while not stop.is_set():
        done = _cli("sql", "SELECT count(*) FROM cleaned_events", "--storage", "delta", "--lake-uri", lake_uri)
        (answers if done.returncode == 0 else failures).append(done.stdout or done.stderr)


@pytest.fixture(params=["folder", "s3"])
def lake_uri(request, tmp_path) -> str:
    """A new lake: a local folder, or a bucket on the S3 endpoint (moto; its AWS_* variables are
    set for the test and its subprocesses)."""
    if request.param == "folder":
        return str(tmp_path / "lake")
    return request.getfixturevalue("lake_bucket").uri


def test_the_same_hour_from_two_writers_leaves_no_duplicate_rows(tmp_path, twelve_hours):
    source, serial = twelve_hours
    lake = str(tmp_path / "lake")
    env = _env(HIPAGES_STORAGE="delta", HIPAGES_LAKE_URI=lake, HIPAGES_SOURCE=str(source / "events-00.json"),
               HIPAGES_OUTPUT_DIR=str(tmp_path / "out"))
    assert _cli("land", env=env).returncode == 0
    runs = [_etl_job(FIRST_HOUR, FIRST_HOUR, env) for _ in range(2)]
    outputs = [run.communicate(timeout=RUN_TIMEOUT)[0] for run in runs]
    assert any(run.returncode == 0 for run in runs), outputs
    con = duckdb.connect()
    attach_lake(con, Lake(lake))
    con.execute(f"ATTACH '{serial}' AS serial (READ_ONLY)")
    for table in ("raw_events", "cleaned_events", "hourly_activity"):
        stored, distinct = con.execute(f"SELECT count(*), count(DISTINCT t) FROM analytics.{table} t").fetchone()
        expected = con.execute(f"SELECT count(*) FROM serial.analytics.{table} t WHERE "
                               f"{'time_bucket = ' + repr(f'{FIRST_HOUR:%Y%m%d%H}') if table == 'hourly_activity' else 'time_stamp < ' + repr(str(FIRST_HOUR + timedelta(hours=1)))}"
                               ).fetchone()[0]
        assert (stored, distinct) == (expected, expected), table


INSTANCE_YAML = CLI_INSTANCE_YAML.format(max_concurrent_runs=4) + """\
storage:
  postgres:
    postgres_url: {url}
"""
"""The command's own instance settings (queue of 4, run retries, run monitoring), in PostgreSQL."""


class Watcher(threading.Thread):
    """Samples the STARTED hourly runs (the queued ones: the command lands and writes the whole
    files in its own process); kills the first run worker seen STARTED for 3 s."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home, self.stop, self.killed, self.most_started = home, threading.Event(), None, 0

    def run(self) -> None:
        instance = DagsterInstance.from_config(str(self.home))
        seen: dict[str, float] = {}
        while not self.stop.is_set():
            started = [run for run in instance.get_runs(RunsFilter(job_name="hipages_etl_job",
                                                                   statuses=[DagsterRunStatus.STARTED]))
                       if "dagster/asset_partition_range_start" in run.tags]  # the queued hourly runs
            self.most_started = max(self.most_started, len(started))
            for run in started:
                seen.setdefault(run.run_id, time.monotonic())
                tag = run.tags.get(RUN_WORKER_TAG, "")
                if self.killed is None and tag and time.monotonic() - seen[run.run_id] > 3:
                    os.kill(int(tag.rpartition(":")[2]), signal.SIGKILL)
                    self.killed = run.run_id
            time.sleep(0.3)


def test_four_queued_runs_on_postgres_one_killed_and_retried_equal_the_serial_result(
        tmp_path, twelve_hours, lake_uri, postgres_url):
    source, serial = twelve_hours
    home = tmp_path / "dagster_home"
    home.mkdir()
    url = dagster_postgres_storage(fresh_postgres_database(postgres_url))["postgres"]["postgres_url"]
    (home / "dagster.yaml").write_text(INSTANCE_YAML.format(url=url))
    env = _env(DAGSTER_HOME=str(home))
    stop, answers, failures = threading.Event(), [], []
    reader = threading.Thread(target=_query_loop, args=(lake_uri, stop, answers, failures))
    watcher = Watcher(home)
    command = subprocess.Popen(
        [sys.executable, "-m", "hipages_pipeline.cli", "run", "--source", str(source / "*.json"),
         "--output-dir", str(tmp_path / "out"), "--storage", "delta", "--lake-uri", lake_uri,
         "--workers", "4", "--max-hours-per-run", "3"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader.start()
    watcher.start()
    try:
        output = command.communicate(timeout=3 * RUN_TIMEOUT)[0]
    finally:
        stop.set()
        watcher.stop.set()
        reader.join(timeout=RUN_TIMEOUT)
        watcher.join(timeout=30)
    assert command.returncode == 0, output[-4000:]
    assert watcher.killed is not None and 2 <= watcher.most_started <= 4, (watcher.killed, watcher.most_started)
    instance = DagsterInstance.from_config(str(home))
    runs = instance.get_runs(RunsFilter(job_name="hipages_etl_job"))
    assert instance.get_run_by_id(watcher.killed).status == DagsterRunStatus.FAILURE
    retries = [run for run in runs if run.tags.get("dagster/parent_run_id") == watcher.killed]
    assert [run.status for run in retries] == [DagsterRunStatus.SUCCESS], output[-4000:]
    hourly = [run for run in runs if "dagster/asset_partition_range_start" in run.tags]  # not the whole files' run
    succeeded = sorted(run.tags["dagster/asset_partition_range_start"] for run in hourly
                       if run.status == DagsterRunStatus.SUCCESS)
    assert succeeded == [f"{FIRST_HOUR + timedelta(hours=3 * i):%Y-%m-%d-%H:00}" for i in range(4)]
    assert failures == [] and len(answers) >= 3
    # user_sessions looks 24 hours around its hours: one run over all 12 settles the sessions that
    # cross the ranges' boundaries (the sessions refresh sensor's job in production).
    settle = _etl_job(FIRST_HOUR, FIRST_HOUR + timedelta(hours=11),
                      _env(HIPAGES_STORAGE="delta", HIPAGES_LAKE_URI=lake_uri, HIPAGES_SOURCE=str(source / "*.json"),
                           HIPAGES_OUTPUT_DIR=str(tmp_path / "out")))
    settled = settle.communicate(timeout=RUN_TIMEOUT)[0]
    assert settle.returncode == 0, settled[-3000:]
    found = _differences(lake_uri, serial)
    rows = found.pop("rows")
    assert found == {table: (0, 0) for table in COMPARED}, rows
