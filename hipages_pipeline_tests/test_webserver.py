"""The UI loads the project: dagster-webserver on a free localhost port answers GraphQL with the
assets, their checks, the job, the schedule and the sensor. Stopped cleanly (no orphan processes).

The ``dagster_ui`` fixture (webserver + daemon for a temporary instance, started once per test
session) and the helpers are shared with ``test_concurrency.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "hipages_pipeline"
REPOSITORY = "__repository__"
STARTUP_TIMEOUT = 120


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """POST a GraphQL query; return its ``data`` (raises on transport or GraphQL errors)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise AssertionError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def live_group_members(pgid: int) -> list[str]:
    """Processes of the process group that are still alive (zombies excluded), as "pid cmd"."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{entry.name} {cmd[:120]}")
    return members


@dataclass
class DagsterProcesses:
    """A running dagster-webserver (and maybe daemon) for a temporary instance."""

    url: str
    home: Path
    log: Path
    pgid: int


def _default_signals() -> None:
    """In the child: SIGINT and SIGTERM back to their defaults. A shell's background job inherits
    SIGINT ignored, and dagster maps SIGTERM to SIGINT's handler: it would ignore SIGTERM too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(processes: Sequence[subprocess.Popen], pgid: int) -> None:
    """SIGTERM the whole process group, wait, then SIGKILL whatever is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if live_group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for process in processes:
            process.wait(timeout=10)


@contextmanager
def dagster_processes(tmp_path: Path, env: dict[str, str] | None = None,
                      daemon: bool = False) -> Iterator[DagsterProcesses]:
    """Start dagster-webserver (and ``dagster-daemon run`` when ``daemon``) on a free port.

    The instance is a temporary ``DAGSTER_HOME`` holding a copy of the project's
    ``dagster_home/dagster.yaml``; outputs go to ``tmp_path / "out"`` unless ``env`` says
    otherwise. All processes share one process group, which is terminated on exit (SIGTERM,
    then SIGKILL after 20 s); the code asserts that none of them survives.
    """
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # Create the instance's SQLite storage here, once: the webserver and the daemon starting
    # together on an empty DAGSTER_HOME would both run the schema migrations (alembic race).
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    port = free_port()
    child_env = {key: value for key, value in os.environ.items() if not key.startswith(("HIPAGES_", "DAGSTER_"))}
    child_env.update({"DAGSTER_HOME": str(home), "HIPAGES_OUTPUT_DIR": str(tmp_path / "out"),
                      "PYTHONWARNINGS": "ignore"}, **(env or {}))
    log = tmp_path / "dagster.log"
    processes: list[subprocess.Popen] = []
    with open(log, "wb") as log_file:
        webserver = subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=child_env, stdout=log_file, stderr=subprocess.STDOUT,
            process_group=0, preexec_fn=_default_signals)  # a new process group, led by the webserver
        processes.append(webserver)
        pgid = webserver.pid
        try:
            if daemon:
                processes.append(subprocess.Popen(
                    [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=PROJECT_ROOT, env=child_env,
                    stdout=log_file, stderr=subprocess.STDOUT, process_group=pgid, preexec_fn=_default_signals))
            url = f"http://127.0.0.1:{port}"
            _wait_until_loaded(url, webserver, log)
            yield DagsterProcesses(url=url, home=home, log=log, pgid=pgid)
        finally:
            _stop_group(processes, pgid)
    survivors = live_group_members(pgid)
    assert not survivors, f"processes left behind: {survivors}"


def _wait_until_loaded(url: str, webserver: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    status = "not started"
    while time.monotonic() < deadline:
        if webserver.poll() is not None:
            raise AssertionError(f"dagster-webserver exited with {webserver.returncode}:\n{log.read_text()[-3000:]}")
        try:
            entries = graphql(url, query, timeout=5)["workspaceOrError"]["locationEntries"]
            status = str(entries)
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                assert not errors, f"code location failed to load: {errors}"
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"dagster-webserver not ready in {STARTUP_TIMEOUT} s ({status}):\n{log.read_text()[-3000:]}")


_SHARED: dict[str, object] = {}


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory) -> Iterator[DagsterProcesses]:
    """dagster-webserver and dagster-daemon on a temporary instance with the project's
    dagster.yaml, reading the sample (``HIPAGES_SOURCE``), writing to a temporary folder.

    Started once per session even though two modules use the fixture (pytest makes one fixture
    per module that imports it; they share the processes, the last teardown stops them).
    """
    if not _SHARED:
        stack = ExitStack()
        sample = PROJECT_ROOT / "data" / "source_event_data.json"
        _SHARED["processes"] = stack.enter_context(dagster_processes(
            tmp_path_factory.mktemp("dagster_ui"), env={"HIPAGES_SOURCE": str(sample)}, daemon=True))
        _SHARED["stack"], _SHARED["users"] = stack, 0
    _SHARED["users"] += 1
    try:
        yield _SHARED["processes"]
    finally:
        _SHARED["users"] -= 1
        if not _SHARED["users"]:
            stack = _SHARED["stack"]
            _SHARED.clear()
            stack.close()


UI_QUERY = """
query ($location: String!, $repository: String!) {
  assetNodes {
    assetKey { path }
    description
    kinds
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking description } } }
  }
  pipelineOrError(params: {repositoryLocationName: $location, repositoryName: $repository,
                           pipelineName: "hipages_etl_job"}) {
    __typename
    ... on Pipeline { name tags { key value } }
  }
  repositoryOrError(repositorySelector: {repositoryLocationName: $location, repositoryName: $repository}) {
    ... on Repository {
      schedules { name cronSchedule scheduleState { status } }
      sensors { name sensorState { status } }
    }
  }
}
"""


@pytest.mark.xdist_group("dagster_ui")  # with test_concurrency: one webserver and daemon
def test_webserver_serves_the_assets_checks_and_job(dagster_ui):
    from hipages_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    expected_checks = {key.to_user_string(): set() for key in graph.get_all_asset_keys()}
    for check_key in graph.asset_check_keys:
        expected_checks[check_key.asset_key.to_user_string()].add(check_key.name)

    data = graphql(dagster_ui.url, UI_QUERY, {"location": LOCATION, "repository": REPOSITORY})

    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(nodes) == set(expected_checks)
    assert {"raw_events", "rejected_events", "rejected_without_hour", "cleaned_events", "duplicate_events",
            "hourly_activity", "event_table_csv", "hourly_activity_csv"} <= set(nodes)
    for key, node in nodes.items():
        assert node["assetChecksOrError"]["__typename"] == "AssetChecks", key
        checks = node["assetChecksOrError"]["checks"]
        assert {check["name"] for check in checks} == expected_checks[key], key
        assert all(check["description"] for check in checks), key
        assert node["description"] and node["kinds"] and node["owners"], key
    assert "lines_accounted" in {c["name"] for c in nodes["raw_events"]["assetChecksOrError"]["checks"]}

    job = data["pipelineOrError"]
    assert job["__typename"] == "Pipeline" and job["name"] == "hipages_etl_job"
    assert {"key": "hipages/duckdb-writer", "value": "hipages.duckdb"} in job["tags"]

    repository = data["repositoryOrError"]
    assert [(s["name"], s["cronSchedule"], s["scheduleState"]["status"]) for s in repository["schedules"]] == [
        ("hipages_hourly_schedule", "15 * * * *", "STOPPED"),
        ("hipages_lake_maintenance_schedule", "30 4 * * *", "STOPPED")]
    assert [(s["name"], s["sensorState"]["status"]) for s in repository["sensors"]] == [
        ("hipages_landed_hours_sensor", "STOPPED"), ("hipages_landing_files_sensor", "STOPPED"),
        ("hipages_sessions_refresh_sensor", "STOPPED"),
        ("hipages_stale_runs_sensor", "RUNNING")]
