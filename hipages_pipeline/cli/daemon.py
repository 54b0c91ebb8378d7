"""The Dagster instance and daemon behind ``hipages-pipeline run --workers N``.

- **Which instance**: ``DAGSTER_HOME``'s when it is set (its ``dagster.yaml`` decides the run
  queue's limits, the run launcher, retries and monitoring); else one that the command keeps
  under the output directory, ``<output_dir>/.dagster/``, whose ``dagster.yaml`` it writes
  (:data:`CLI_INSTANCE_YAML`: the queue's limit, run retries, run monitoring, the default run
  launcher: each run its own process; swap ``run_launcher`` for Docker or Kubernetes).
- **Which daemon**: the runs leave the queue when a ``dagster-daemon`` serves the instance. When
  none does (no queue heartbeat in the last :data:`HEARTBEAT_FRESH_SECONDS`), :class:`Daemon`
  starts ``dagster-daemon run`` with the command's workspace (:data:`WORKSPACE_YAML`) for the
  duration of the command, in a process group of its own (its code servers and run workers
  too), and stops the whole group at the end, on Ctrl-C and on errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dagster import DagsterInstance

from hipages_pipeline.defs.automation.jobs import DUCKDB_WRITER_TAG

LOCATION_NAME = "hipages_pipeline"
"""The code location's name: as in the project's workspace.yaml, so that a daemon already serving
``DAGSTER_HOME`` (``make dev``) launches the command's runs too."""
DEFINITIONS_MODULE = "hipages_pipeline.definitions"
HEARTBEAT_FRESH_SECONDS = 90.0
"""A daemon heartbeats every 30 s: one seen within 90 s is a daemon that runs."""
STOP_WAIT_SECONDS = 40.0

CLI_INSTANCE_YAML = """\
# Written by `hipages-pipeline run --workers N` at each run (edits are overwritten). DAGSTER_HOME
# replaces this instance with yours. Runs, event logs and sensor state: SQLite files here.
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: {max_concurrent_runs}
  dequeue_interval_seconds: 1
# Each run in its own process, launched through the code server. Docker or Kubernetes workers:
# dagster_docker.DockerRunLauncher / dagster_k8s.K8sRunLauncher here, nothing else changes.
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
# A run that fails outside its steps (its worker killed, out of memory) is re-launched, at most
# twice; a run whose asset or check failed is not (the same input fails the same way).
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 10
"""

WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: {module}
      location_name: {location}
      working_directory: {cwd}
      executable_path: {python}
"""


def cli_instance_home(output_dir: Path) -> Path:
    """The instance directory the command keeps under the output directory."""
    return Path(output_dir).absolute() / ".dagster"


def write_cli_instance(home: Path, max_concurrent_runs: int) -> DagsterInstance:
    """(Re)write the command's ``dagster.yaml`` and open that instance."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(CLI_INSTANCE_YAML.format(max_concurrent_runs=max_concurrent_runs))
    return DagsterInstance.from_config(str(home))


def write_workspace(directory: Path) -> Path:
    """The workspace file of the daemon the command starts: this module, this interpreter, this
    working directory (relative source globs resolve as in the command)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "workspace.yaml"
    path.write_text(WORKSPACE_YAML.format(module=DEFINITIONS_MODULE, location=LOCATION_NAME,
                                          cwd=Path.cwd(), python=sys.executable))
    return path


def daemon_heartbeat_age(instance: DagsterInstance) -> float | None:
    """Seconds since the run queue's daemon last heartbeat in this instance (None: never)."""
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    beat = instance.get_daemon_heartbeats().get(QueuedRunCoordinatorDaemon.daemon_type())
    return None if beat is None else time.time() - beat.timestamp


def daemon_running(instance: DagsterInstance) -> bool:
    age = daemon_heartbeat_age(instance)
    return age is not None and age < HEARTBEAT_FRESH_SECONDS


class Daemon:
    """``dagster-daemon run`` for one instance, as a child process group of the command."""

    def __init__(self, home: Path, workspace: Path, env: dict[str, str], log_path: Path) -> None:
        self.home, self.workspace, self.env, self.log_path = home, workspace, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> int:
        """Start the daemon; its pid."""
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dagster._daemon", "run", "-w", str(self.workspace)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own group: Ctrl-C reaches the command, which stops it
        return self.process.pid

    def exited(self) -> int | None:
        """The daemon's exit status once it has ended, else None."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT the daemon (it stops its threads and code servers), then SIGKILL whatever is
        left of its process group after :data:`STOP_WAIT_SECONDS`; reap the daemon."""
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group's id is the daemon's pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline and (self.process.poll() is None or _group_alive(group)):
            time.sleep(0.2)
        if self.process.poll() is None or _group_alive(group):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


def _group_alive(group: int) -> bool:
    """Whether a process of the group remains (zombies of other parents count until reaped)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def queue_limit(instance: DagsterInstance) -> tuple[int | None, str]:
    """How many of the command's runs the instance's queue lets start at once (None: no limit),
    and its limits as a text. Raises ValueError when the instance has no run queue."""
    from dagster._core.run_coordinator import QueuedRunCoordinator

    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        raise ValueError(f"--workers needs a run queue: the instance's run coordinator is "
                         f"{type(instance.run_coordinator).__name__}, not QueuedRunCoordinator")
    config = instance.run_coordinator.get_run_queue_config()
    limits = [config.max_concurrent_runs] if config.max_concurrent_runs >= 0 else []
    limits += [limit["limit"] for limit in config.tag_concurrency_limits
               if limit["key"] == DUCKDB_WRITER_TAG and limit.get("value") in (None, "hipages.duckdb")]
    tags = ", ".join(f"{limit['key']}={limit['limit']}" for limit in config.tag_concurrency_limits) or "none"
    text = (f"max_concurrent_runs {config.max_concurrent_runs}, tag limits {tags}, "
            f"run launcher {type(instance.run_launcher).__name__}")
    return (min(limits) if limits else None), text


def queue_instance(instance: DagsterInstance | None, output_dir: Path, workers: int, parallel_writers: bool,
                   progress) -> DagsterInstance:
    """``instance`` (DAGSTER_HOME's) when given, else the command's own under the output directory
    (one run at a time without ``parallel_writers``). Raises ConfigurationError when it has no queue."""
    from hipages_pipeline.cli.runner import ConfigurationError

    if not parallel_writers:
        progress(f"--workers {workers}: runs are serialized (one at a time), because one DuckDB file has one "
                 "writer; parallel runs need a storage with parallel writers")
    instance = instance or write_cli_instance(cli_instance_home(output_dir), workers if parallel_writers else 1)
    try:
        queue_limit(instance)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return instance
