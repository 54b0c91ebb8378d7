"""Shared fixtures: the sample file, a way to land source files and run hipages_etl_job for hours,
and DuckDB queries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

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


@pytest.fixture(autouse=True)
def _ephemeral_dagster_instance(monkeypatch):
    """Tests never write to the project's Dagster instance (make exports DAGSTER_HOME)."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="session")
def sample_output(tmp_path_factory) -> Path:
    """One `hipages-pipeline run` of the sample for the whole session (read it, don't change it)."""
    from hipages_pipeline.cli import main

    out = tmp_path_factory.mktemp("sample_output")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        assert main(["run", "--source", str(SAMPLE), "--output-dir", str(out)]) == 0
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
