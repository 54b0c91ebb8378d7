"""Readers never break writers, and writers wait for each other (DuckDB lets one process at a time
write the database file, with no reader beside it).

1. Two ``hipages-pipeline run`` of the sample into one output directory, started at the same
   moment, both succeed, and the tables are one run's.
2. Queries during a run (``hipages-pipeline sql`` over and over, and read-only connections opened
   and closed in a loop) all answer, and the run succeeds.
3. ``hipages-pipeline sql`` prints CSV; a SQL error or a missing database exits 2 with one line.
4. A lock wait gives up after its bound with a one-line message.

Every command runs as a subprocess (``python -m hipages_pipeline.cli``, the project on
PYTHONPATH, no DAGSTER_HOME), with a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from hipages_pipeline.lib.storage.duckdb_files import LOCK_WAIT_ENV, lock_wait_seconds, open_database
from hipages_pipeline_tests.conftest import PROJECT_ROOT, SAMPLE

RUN_TIMEOUT = 300
COUNTS = ("SELECT (SELECT count(*) FROM analytics.cleaned_events), (SELECT count(DISTINCT event_id) FROM "
          "analytics.cleaned_events), (SELECT count(*) FROM analytics.hourly_activity), (SELECT count(*) FROM "
          "analytics.user_sessions), (SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'staging')")
ONE_RUN = (500, 500, 28, 234, 0)
"""The sample's cleaned events (all distinct), hourly rows, sessions, and no staging table left."""


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return {**env, **extra}


def cli(*args: str, **popen) -> subprocess.Popen:
    """``hipages-pipeline ARGS`` as a subprocess (text output, piped)."""
    return subprocess.Popen([sys.executable, "-m", "hipages_pipeline.cli", *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **{"env": _env(), **popen})


def finish(process: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, out, err


def run(output_dir: Path) -> subprocess.Popen:
    return cli("run", "--source", str(SAMPLE), "--output-dir", str(output_dir))


def counts(output_dir: Path) -> tuple:
    con = duckdb.connect(str(output_dir / "hipages.duckdb"), read_only=True)
    try:
        return con.execute(COUNTS).fetchone()
    finally:
        con.close()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, list[tuple[int, str, str, float]]]:
    """Two runs of the sample into one output directory, started at the same moment: the
    directory and each run's (status, stdout, stderr, seconds). Later tests read the directory."""
    out = tmp_path_factory.mktemp("two_runs")
    started = time.monotonic()
    processes = [run(out), run(out)]
    results = []
    for process in processes:
        status, stdout, stderr = finish(process)
        results.append((status, stdout, stderr, time.monotonic() - started))
    return out, results


@pytest.mark.xdist_group("two_runs")  # the module fixture runs once
def test_two_runs_into_one_output_directory_at_once_both_succeed(two_runs):
    out, results = two_runs
    for status, stdout, stderr, _ in results:
        assert status == 0, stderr
        assert "accounting        500 = 500 + 0 + 0 (ok)" in stdout
    assert counts(out) == ONE_RUN
    print(f"two runs at once: {', '.join(f'{seconds:.1f} s' for *_, seconds in results)}")


@pytest.mark.xdist_group("two_runs")  # the module fixture runs once
def test_queries_during_a_run_all_answer_and_the_run_succeeds(two_runs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(two_runs[0], out)
    database = out / "hipages.duckdb"
    stop = threading.Event()
    connections: list[int] = []

    def read_only_connections() -> None:  # a reader in another process than the run: this one
        while not stop.is_set():
            con = open_database(database, {}, read_only=True, wait_seconds=60)
            try:
                connections.append(con.execute("SELECT count(*) FROM analytics.cleaned_events").fetchone()[0])
            finally:
                con.close()
            time.sleep(0.05)

    reader = threading.Thread(target=read_only_connections, daemon=True)
    reader.start()
    writer = run(out)
    answers = []
    try:
        while writer.poll() is None:
            answers.append(finish(cli("sql", "SELECT count(*) AS n FROM cleaned_events", "--output-dir", str(out)),
                                  timeout=120))
    finally:
        status, stdout, stderr = finish(writer)
        stop.set()
        reader.join(timeout=90)
    assert status == 0, stderr
    assert not reader.is_alive()
    assert answers and all(answer == (0, "n\n500\n", "") for answer in answers), answers
    assert connections and set(connections) == {500}
    assert counts(out) == ONE_RUN
    print(f"during one run: {len(answers)} sql commands and {len(connections)} read-only connections answered")


@pytest.mark.xdist_group("two_runs")  # the module fixture runs once
def test_sql_prints_the_result_as_csv(two_runs):
    out = two_runs[0]
    status, stdout, stderr = finish(cli(
        "sql", "SELECT time_bucket, url_level1, url_level2, activity, activity_count, user_count FROM hourly_activity "
        "WHERE time_bucket = '2017020220' AND url_level2 = 'articles' AND activity = 'page_view' ORDER BY url_level1",
        "--output-dir", str(out)), timeout=120)
    assert (status, stderr) == (0, "")
    assert stdout == ("time_bucket,url_level1,url_level2,activity,activity_count,user_count\n"
                      "2017020220,hipages.com.au,articles,page_view,59,30\n"
                      "2017020220,myhelpfulpages.com.au,articles,page_view,1,1\n")
    status, stdout, _ = finish(cli("sql", "SELECT NULL AS nothing, '' AS empty, 'a,b' AS comma", "--output-dir",
                                   str(out)), timeout=120)
    assert (status, stdout) == (0, 'nothing,empty,comma\n,"","a,b"\n')


@pytest.mark.xdist_group("two_runs")  # the module fixture runs once
def test_sql_errors_exit_2_with_one_line(two_runs, tmp_path):
    status, stdout, stderr = finish(cli("sql", "SELECT * FROM no_such_table", "--output-dir", str(two_runs[0])),
                                    timeout=120)
    assert (status, stdout) == (2, "")
    assert stderr.count("\n") == 1 and stderr.startswith("hipages-pipeline sql: Catalog Error:"), stderr
    assert "no_such_table" in stderr
    status, stdout, stderr = finish(cli("sql", "SELECT 1", "--output-dir", str(tmp_path / "none")), timeout=120)
    assert (status, stdout) == (2, "")
    assert stderr == f"hipages-pipeline sql: no database at {tmp_path / 'none' / 'hipages.duckdb'} " \
                     "(run `hipages-pipeline run` first, or give its --output-dir)\n"


def test_the_lock_wait_gives_up_after_its_bound_with_one_line(tmp_path):
    database = tmp_path / "hipages.duckdb"
    holder = duckdb.connect(str(database))  # a writer in this process holds the file
    try:
        holder.execute("CREATE TABLE t (x INT)")
        started = time.monotonic()
        status, stdout, stderr = finish(cli("run", "--source", str(SAMPLE), "--output-dir", str(tmp_path),
                                            env=_env(**{LOCK_WAIT_ENV: "1"})), timeout=120)
        run_seconds = time.monotonic() - started
        started = time.monotonic()
        sql = finish(cli("sql", "SELECT 1", "--wait", "1", "--output-dir", str(tmp_path)), timeout=120)
        sql_seconds = time.monotonic() - started
    finally:
        holder.close()
    assert status == 1 and stdout == ""
    assert stderr == (f"hipages-pipeline: {database} is locked: waited 1.0 s to open it for writing, but another "
                      f"process (PID {os.getpid()}) holds it (a hipages-pipeline run, or a reader such as "
                      f"`hipages-pipeline sql` or an open DuckDB connection); try again when it is done, or wait "
                      f"longer with {LOCK_WAIT_ENV}\n")
    assert sql[0] == 1 and sql[1] == "" and sql[2].count("\n") == 1
    assert f"{database} is locked: waited 1.0 s to open it read-only" in sql[2] and sql[2].endswith("--wait\n")
    assert run_seconds < 30 and sql_seconds < 30  # the bound, plus the interpreter's start


def test_lock_wait_setting(monkeypatch):
    monkeypatch.delenv(LOCK_WAIT_ENV, raising=False)
    assert lock_wait_seconds() == 600
    monkeypatch.setenv(LOCK_WAIT_ENV, "2.5")
    assert lock_wait_seconds() == 2.5
    assert lock_wait_seconds(0) == 0
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(LOCK_WAIT_ENV, bad)
        with pytest.raises(ValueError, match=LOCK_WAIT_ENV):
            lock_wait_seconds()
