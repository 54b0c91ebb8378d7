"""Shared fixtures: the sample file, a way to land source files and run hipages_etl_job for hours,
and DuckDB queries."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from filelock import FileLock

from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.partitions import hour_of, range_tags, source_file_partitions
from hipages_pipeline.defs.resources import (
    DATABASE_SCHEMA,
    EventSource,
    database_path,
    make_resources,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT_ROOT / "data" / "source_event_data.json"


def pytest_xdist_auto_num_workers(config) -> int | None:
    """`-n auto` (pyproject's addopts): as many workers as cores (pytest-xdist's count, or
    PYTEST_XDIST_AUTO_NUM_WORKERS), but none when every argument names a test (path::name): one
    test runs in this process, without starting workers."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    if config.args and all("::" in arg for arg in config.args):
        return 0
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Keep `--dist loadgroup` grouping on pytest 9.2. pytest-xdist marks a test's xdist_group by
    suffixing its node id with "@group" in each worker; pytest 9.2 keeps the id in a structured
    field, the suffix is silently lost and the group's tests are spread over the workers
    (pytest-dev/pytest-xdist#1386, fix pending in #1388). Set the suffix where pytest reads it."""
    if not getattr(config.option, "loadgroup", False):  # set in the workers of --dist loadgroup only
        return
    for item in items:
        names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                 for mark in item.iter_markers("xdist_group")}
        suffix = "@" + "_".join(sorted(names))
        if not names or item.nodeid.endswith(suffix):
            continue
        if hasattr(item, "_id"):  # pytest >= 9.2: a NodeId
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(item.nodeid + suffix)
        else:
            item._nodeid = item.nodeid + suffix


@pytest.fixture(autouse=True)
def _ephemeral_dagster_instance(monkeypatch):
    """Tests never write to the project's Dagster instance (make exports DAGSTER_HOME)."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@dataclass(frozen=True)
class SampleRun:
    """The one `hipages-pipeline run --source SAMPLE` of the test session."""

    status: int
    """The command's exit status."""
    output: Path
    """Its output directory (shared: read it, never change it; copy it to change it)."""
    stdout: str
    """What the command printed on standard output (progress and summary)."""


def shared_tmp_dir(tmp_path_factory) -> Path:
    """A temporary directory of this test session, one for all pytest-xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def sample_cli_run(tmp_path_factory) -> SampleRun:
    """One `hipages-pipeline run` of the sample (in process, no DAGSTER_HOME) for the whole
    session: with pytest-xdist, the first worker that needs it runs it and the others wait for
    it and read the same directory (a file lock)."""
    from hipages_pipeline.cli import main

    root = shared_tmp_dir(tmp_path_factory)
    base = root / "sample_cli_run"
    status_file = base / "status"
    with FileLock(str(root / "sample_cli_run.lock")):
        if not status_file.exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            printed = io.StringIO()
            with pytest.MonkeyPatch.context() as patch, redirect_stdout(printed):
                patch.delenv("DAGSTER_HOME", raising=False)
                status = main(["run", "--source", str(SAMPLE), "--output-dir", str(base / "out")])
            (base / "stdout.txt").write_text(printed.getvalue(), encoding="utf-8")
            status_file.write_text(str(status))
    return SampleRun(status=int(status_file.read_text()), output=base / "out",
                     stdout=(base / "stdout.txt").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def sample_output(sample_cli_run) -> Path:
    """The output directory of the session's run of the sample (read it, don't change it)."""
    assert sample_cli_run.status == 0, sample_cli_run.stdout
    return sample_cli_run.output


@pytest.fixture
def sample_output_copy(sample_output, tmp_path) -> Path:
    """A copy of the session's sample output for this test alone (``tmp_path / "out"``): the state
    `hipages-pipeline run --source SAMPLE --output-dir tmp_path/out` leaves, for a test to change."""
    out = tmp_path / "out"
    shutil.copytree(sample_output, out)
    return out


@pytest.fixture
def sample_path() -> Path:
    return SAMPLE


def land(source_glob: str | Path, output_dir: Path, timezone: str = "UTC", rebuild: bool = False,
         instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    """Run hipages_landing_job in process for every file the glob matches (one ranged run; a file
    landed before is landed again, which replaces its rows)."""
    source = EventSource(source_glob=str(source_glob), source_timezone=timezone)
    files = [str(path) for path in source.files()]
    instance = instance or DagsterInstance.ephemeral()
    known = set(instance.get_dynamic_partitions(source_file_partitions.name))
    instance.add_dynamic_partitions(source_file_partitions.name, [f for f in files if f not in known])
    order = instance.get_dynamic_partitions(source_file_partitions.name)
    first, last = order.index(files[0]), order.index(files[-1])
    assert order[first:last + 1] == files, "the files must be contiguous partitions (a fresh instance)"
    job = build_definitions(make_resources(source, str(output_dir), rebuild=rebuild)).resolve_job_def(
        "hipages_landing_job")
    return job.execute_in_process(instance=instance, raise_on_error=False, tags={
        ASSET_PARTITION_RANGE_START_TAG: files[0], ASSET_PARTITION_RANGE_END_TAG: files[-1]})


def run_job(source_glob: str | Path, output_dir: Path, first: str, last: str | None = None,
            timezone: str = "UTC") -> ExecuteInProcessResult:
    """Land the glob's files (:func:`land`), then run hipages_etl_job for partition keys
    first..last (e.g. '2017-02-02-20:00') in process; a failed landing's result is returned as is."""
    instance = DagsterInstance.ephemeral()
    landing = land(source_glob, output_dir, timezone, instance=instance)
    if not landing.success:
        return landing
    resources = make_resources(EventSource(source_glob=str(source_glob), source_timezone=timezone), str(output_dir))
    job = build_definitions(resources).resolve_job_def("hipages_etl_job")
    return job.execute_in_process(
        instance=instance, raise_on_error=False,
        tags=range_tags(hour_of(first), hour_of(last or first)),
    )


@pytest.fixture
def run_hours() -> Callable[..., ExecuteInProcessResult]:
    return run_job


def query_db(output_dir: Path, sql: str) -> pd.DataFrame:
    """Run SQL against the output directory's DuckDB database ({s} is the tables' schema)."""
    con = duckdb.connect(str(database_path(str(output_dir))), read_only=True)
    try:
        return con.sql(sql.format(s=DATABASE_SCHEMA)).df()
    finally:
        con.close()


@pytest.fixture
def query() -> Callable[[Path, str], pd.DataFrame]:
    return query_db
