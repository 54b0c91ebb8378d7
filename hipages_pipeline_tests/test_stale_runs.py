"""A run whose process is killed with kill -9 is marked failed by the stale-runs sensor; live runs are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, build_sensor_context

from hipages_pipeline.defs.automation.stale_runs import (
    RUN_WORKER_TAG,
    STALE_RUNS_SENSOR_NAME,
    hipages_stale_runs_sensor,
    process_gone,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# A run of one asset stored by the project's IO manager (which tags the run with its process),
# whose step sleeps long enough to be killed in the middle.
SLEEPING_RUN = textwrap.dedent("""
    import sys, time
    import pandas as pd
    from dagster import DagsterInstance, asset, materialize
    from hipages_pipeline.defs.io_manager import HipagesDuckDBIOManager

    @asset
    def sleeper() -> pd.DataFrame:
        time.sleep(120)
        return pd.DataFrame({"n": [1]})

    materialize([sleeper], instance=DagsterInstance.get(),
                resources={"io_manager": HipagesDuckDBIOManager(database=sys.argv[1], schema="analytics")})
""")


def start_sleeping_run(home: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", SLEEPING_RUN, str(home / "sleep.duckdb")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_tagged_run(instance: DagsterInstance, child: subprocess.Popen, timeout: float = 40):
    """The child's run, once it is STARTED and tagged with its process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, "the sleeping run's process ended early"
        for run in instance.get_runs():
            if run.status == DagsterRunStatus.STARTED and RUN_WORKER_TAG in run.tags:
                return run
        time.sleep(0.5)
    raise AssertionError("the sleeping run did not start in time")


def test_a_killed_run_is_marked_failed_and_a_live_one_left_alone(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = DagsterInstance.from_config(str(home))
    child = start_sleeping_run(home)
    try:
        run = wait_for_tagged_run(instance, child)
        assert run.tags[RUN_WORKER_TAG].endswith(f":{child.pid}")
        # alive: left alone
        hipages_stale_runs_sensor(build_sensor_context(instance=instance))
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        # killed mid-run: it stays STARTED until the sensor marks it failed
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        result = hipages_stale_runs_sensor(build_sensor_context(instance=instance))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert run.run_id in result.skip_message
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    message = failure.dagster_event.message
    assert f"process {child.pid}" in message and "no longer exists" in message and STALE_RUNS_SENSOR_NAME in message
    # a second tick changes nothing
    hipages_stale_runs_sensor(build_sensor_context(instance=instance))
    assert len(instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)) == 1


def test_a_process_is_gone_when_missing_or_newer_than_the_run():
    assert not process_gone(os.getpid(), run_started=time.time())
    assert process_gone(os.getpid(), run_started=0)  # a process newer than the run: the pid was reused
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert process_gone(dead.pid, run_started=None)
