"""One DuckDB writer at a time (issue 3, item 6).

1. The sample landed, two runs submitted at the same moment to an instance with the project's config
   (``dagster_home/dagster.yaml``: queued run coordinator, ``max_concurrent_runs: 1``, the
   ``hipages/duckdb-writer`` tag limit) and the daemon running - a run of ``hipages_etl_job``
   (what the schedule and the sensor launch) and a "Materialize" from the asset graph (a run of
   the implicit asset job, as asset backfills create; it does not carry the job's tag) - both
   succeed, one after the other.
2. The IO manager's connection waits for a lock held by another process (``open_database`` polls
   with a growing sleep, up to ``HIPAGES_DUCKDB_LOCK_WAIT_SECONDS``, default 600 s).
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import SimpleNamespace

import duckdb
import pytest

from hipages_pipeline.defs.io_manager import TransactionalDuckDbClient
from hipages_pipeline_tests.conftest import SAMPLE, land, query_db
from hipages_pipeline_tests.test_webserver import (  # noqa: F401 (fixture)
    LOCATION,
    REPOSITORY,
    dagster_ui,
    graphql,
)

LAUNCH = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUNS = """
query ($ids: [String!]) {
  runsOrError(filter: {runIds: $ids}) {
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
  }
}
"""


def launch(url: str, job: str, tags: dict[str, str], assets: list[str] | None = None) -> str:
    """Submit a run through the webserver (as the UI does); returns its id. It starts QUEUED."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job}
    if assets:
        selector["assetSelection"] = [{"path": [asset]} for asset in assets]
    params = {"selector": selector, "runConfigData": {},
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}
    result = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def hour(key: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": key, "dagster/asset_partition_range_end": key}


@pytest.mark.xdist_group("dagster_ui")  # with test_webserver: one webserver and daemon
def test_two_runs_launched_together_queue_and_both_succeed(dagster_ui):
    # The hourly runs read landed lines: land the sample into the UI's output directory first.
    assert land(SAMPLE, dagster_ui.home.parent / "out").success
    with ThreadPoolExecutor(2) as pool:  # submitted at the same moment
        schedule_like = pool.submit(launch, dagster_ui.url, "hipages_etl_job", hour("2017-02-02-20:00"))
        asset_graph = pool.submit(launch, dagster_ui.url, "__ASSET_JOB", hour("2017-03-01-20:00"),
                                  ["raw_events", "rejected_events"])
        run_ids = [schedule_like.result(), asset_graph.result()]
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        runs = graphql(dagster_ui.url, RUNS, {"ids": run_ids})["runsOrError"]["results"]
        if all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs):
            break
        time.sleep(1)
    by_id = {run["runId"]: run for run in runs}
    assert [by_id[i]["status"] for i in run_ids] == ["SUCCESS"] * 2, dagster_ui.log.read_text()[-4000:]
    writer_tags = [{t["key"]: t["value"] for t in by_id[i]["tags"]}.get("hipages/duckdb-writer") for i in run_ids]
    assert writer_tags == ["hipages.duckdb", None]
    # the queue let them in one at a time: the two runs did not overlap
    first, second = sorted((by_id[i]["startTime"], by_id[i]["endTime"]) for i in run_ids)
    assert first[1] <= second[0], (first, second)
    # and both wrote the one database
    hours = query_db(dagster_ui.home.parent / "out",
                     "SELECT DISTINCT strftime(time_stamp, '%Y%m%d%H') AS h FROM {s}.raw_events ORDER BY 1")
    assert hours["h"].tolist() == ["2017020220", "2017030120"]


HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS t (x INT)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_io_manager_connection_waits_for_another_writer(tmp_path):
    database = tmp_path / "hipages.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(database), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # another process cannot open the file while the holder has it
        try:
            duckdb.connect(str(database)).close()
            raise AssertionError("DuckDB let a second process open the database for writing")
        except duckdb.IOException as exc:
            assert "lock" in str(exc).lower()
        # the IO manager's connect waits (open_database's bounded wait) until the holder is gone
        context = SimpleNamespace(resource_config={"database": str(database), "connection_config": {}})
        started = datetime.now()
        with TransactionalDuckDbClient.connect(context, None) as con:
            assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
        waited = (datetime.now() - started).total_seconds()
        assert 0.5 < waited < 30
    finally:
        holder.kill() if holder.poll() is None else None
        holder.wait(timeout=10)
        holder.stdout.close()
