"""``hipages-pipeline run --workers N`` (issue 11, item 2): the hourly runs through a Dagster run queue.

On a small generated input (4 hours, ranged runs of 2 hours: 2 runs), ``--workers 2`` on the
default DuckDB storage is serialized through the queue of the command's own instance
(``<output>/.dagster``): every run is submitted at once, at most one is STARTED at a time, all
succeed, and the CSV files are byte for byte those of ``--workers 1`` (in process). The daemon
the command started is gone afterwards, with its process group (code server, run workers).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from hipages_pipeline.cli import main
from hipages_pipeline.cli.queue import COMMAND_TAG
from hipages_pipeline.lib.generator import GeneratorSpec, generate

CSV_FILES = ["event_table.csv", "hourly_activity.csv", "user_sessions.csv", "rejected_events.csv"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("workers_source") / "events.json"
    generate(GeneratorSpec(events=300, start=datetime(2017, 2, 2, 10), hours=4, seed=11), path)
    return path


def _run(source: Path, out: Path, *options: str) -> int:
    return main(["run", "--source", str(source), "--output-dir", str(out), "--max-hours-per-run", "2", *options])


def _gone(pid: int) -> bool:
    for probe in (lambda: os.kill(pid, 0), lambda: os.killpg(pid, 0)):
        try:
            probe()
            return False
        except ProcessLookupError:
            pass
    return True


def test_workers_2_on_duckdb_go_through_the_queue_one_at_a_time(source, tmp_path, capsys):
    assert _run(source, tmp_path / "serial") == 0
    serial_out = capsys.readouterr()
    assert _run(source, tmp_path / "queued", "--workers", "2") == 0
    queued = capsys.readouterr()
    # the result is the in-process one, byte for byte, checks included
    for name in CSV_FILES:
        assert (tmp_path / "queued" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
    checks = re.compile(r"asset checks .*")
    assert checks.search(queued.out).group(0) == checks.search(serial_out.out).group(0)
    assert "runs are serialized (one at a time), because one DuckDB file has one writer" in queued.err
    assert len(re.findall(r"\] .* started \(run", queued.err)) == 2
    assert len(re.findall(r": ok in ", queued.err)) == 2
    # the queue saw the 2 runs: all submitted before the first ended, never two STARTED at once
    instance = DagsterInstance.from_config(str(tmp_path / "queued" / ".dagster"))
    records = [r for r in instance.get_run_records() if COMMAND_TAG in r.dagster_run.tags]
    assert len(records) == 2
    assert {r.dagster_run.status for r in records} == {DagsterRunStatus.SUCCESS}
    assert {r.dagster_run.job_name for r in records} == {"hipages_etl_job"}
    intervals = sorted((r.start_time, r.end_time) for r in records)
    assert max(r.create_timestamp.timestamp() for r in records) < intervals[0][1]
    assert all(earlier[1] <= later[0] for earlier, later in zip(intervals, intervals[1:])), intervals
    # the daemon it started is gone, and its process group (code server, run workers) with it
    daemon = int(re.search(r"started dagster-daemon \(pid (\d+)", queued.err).group(1))
    assert _gone(daemon)
    assert instance.get_daemon_heartbeats() == {}


def test_workers_need_a_run_queue(source, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_coordinator:\n  module: dagster._core.run_coordinator\n"
                                       "  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert _run(source, tmp_path / "out", "--workers", "2") == 2
    assert "--workers needs a run queue" in capsys.readouterr().err
