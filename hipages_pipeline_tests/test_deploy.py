"""deploy/: what can be checked without Docker, Kubernetes, PostgreSQL or an object store.

The instance files are validated by Dagster's own loader (``InstanceRef.from_dir`` runs
``dagster_instance_config``: the instance schema) and loaded as a ``DagsterInstance`` with only the
database swapped for SQLite; the PostgreSQL storage config is resolved from the environment as
Dagster does it. The compose file, the Helm values and the Dockerfile are checked for what makes
them work together: the same settings everywhere, names that match, versions from constraints.txt.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.instance.types import InstanceType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.event_log import InMemoryEventLogStorage
from dagster._core.storage.root import TemporaryLocalArtifactStorage
from dagster._core.storage.runs import InMemoryRunStorage
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._serdes.config_class import ConfigurableClassData
from dagster_postgres.utils import pg_url_from_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


COMPOSE = load_yaml(DEPLOY / "docker-compose.yaml")
HELM = load_yaml(DEPLOY / "helm" / "values.yaml")
_COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """A compose value as `docker compose` reads it with nothing exported: each
    ``${NAME:-default}`` is its default, ``$$`` is ``$``."""
    return _COMPOSE_VAR.sub(lambda m: m.group(2) or "", str(value)).replace("$$", "$")


def compose_env(service: str) -> dict[str, str]:
    return {k: interpolate(v) for k, v in COMPOSE["services"][service].get("environment", {}).items()}


def compose_mounts(service: str) -> list[str]:
    """Where a service's volumes are mounted in its container."""
    return [interpolate(volume).split(":")[1] for volume in COMPOSE["services"][service].get("volumes", [])]


def env_refs(config) -> set[str]:
    """Names of the environment variables that an instance config reads (``{env: NAME}``)."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            return {config["env"]}
        return set().union(*(env_refs(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(env_refs(v) for v in config))
    return set()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), " ".join(line.split()[1:])) for line in lines]


def image_env() -> dict[str, str]:
    return dict(item.split("=", 1) for op, args in dockerfile_instructions() if op == "ENV" for item in args.split())


def pip_install_line() -> str:
    [install] = [args for op, args in dockerfile_instructions() if op == "RUN" and "pip install" in args]
    return install


DAGSTER_SERVICES = ("code", "webserver", "daemon")
PG_ENV = {"DAGSTER_PG_HOST": "pg.test", "DAGSTER_PG_PORT": "6543", "DAGSTER_PG_USERNAME": "u",
          "DAGSTER_PG_PASSWORD": "p w", "DAGSTER_PG_DB": "hipages_test"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return load_yaml(DEPLOY / "dagster.yaml")


def load_instance(config_dir: Path) -> DagsterInstance:
    """The instance of ``config_dir``'s dagster.yaml as Dagster loads it (schema validation, then
    its run coordinator, compute logs, scheduler and settings rehydrated), with in-memory storage
    and the default launcher in place of the database and of the launcher, which need a server."""
    ref = InstanceRef.from_dir(str(config_dir))
    return DagsterInstance(
        instance_type=InstanceType.EPHEMERAL, local_artifact_storage=TemporaryLocalArtifactStorage(),
        run_storage=InMemoryRunStorage(), event_storage=InMemoryEventLogStorage(),
        compute_log_manager=ref.compute_log_manager, run_coordinator=ref.run_coordinator,
        run_launcher=DefaultRunLauncher(), scheduler=ref.scheduler, settings=ref.settings)


# --- the compose instance (deploy/dagster.yaml) ---------------------------------------------------

def test_deploy_instance_postgres_settings_resolve_from_the_environment(monkeypatch):
    from dagster_postgres import DagsterPostgresStorage

    storage = InstanceRef.from_dir(str(DEPLOY)).storage_data
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    resolved = process_config(DagsterPostgresStorage.config_type(), storage.config_dict)
    assert resolved.success, resolved.errors
    assert pg_url_from_config(resolved.value) == "postgresql://u:p%20w@pg.test:6543/hipages_test"
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    missing = process_config(DagsterPostgresStorage.config_type(), storage.config_dict)
    assert not missing.success and "DAGSTER_PG_PASSWORD" in str(missing.errors)


def test_deploy_instance_loads_with_queue_retries_and_monitoring(instance_yaml):
    ref = InstanceRef.from_dir(str(DEPLOY))  # raises DagsterInvalidConfigError on any schema error
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == ("dagster_docker", "DockerRunLauncher")
    with load_instance(DEPLOY) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        backfill = {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits}["dagster/backfill"]
        assert 1 <= backfill < queue.max_concurrent_runs, "backfills must leave a slot for schedule and sensor runs"
        assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        # A dead run worker frees its slot within minutes: the launcher checks STARTED runs every
        # poll; runs that never start or never finish cancelling are failed after the timeouts.
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds <= 60
        assert instance.run_monitoring_start_timeout_seconds <= 300
        assert instance.run_monitoring_settings["cancel_timeout_seconds"] <= 300
        # Resuming a run in a new worker needs a step-per-container executor; definitions.py sets
        # the in-process executor, so a dead worker's run is failed and retried instead.
        assert "executor=in_process_executor" in (ROOT / "hipages_pipeline" / "definitions.py").read_text()
        assert instance.run_monitoring_max_resume_run_attempts == 0


def test_docker_run_launcher_config_is_valid(instance_yaml):
    dagster_docker = pytest.importorskip("dagster_docker", reason="dagster-docker is installed in the image only")
    data = InstanceRef.from_dir(str(DEPLOY)).run_launcher_data
    assert isinstance(data, ConfigurableClassData)
    launcher = data.rehydrate(as_type=dagster_docker.DockerRunLauncher)  # validates against its schema
    assert launcher.supports_check_run_worker_health
    assert launcher.networks == [instance_yaml["run_launcher"]["config"]["network"]]


def test_project_instance_still_loads():
    with load_instance(ROOT / "dagster_home") as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_monitoring_enabled


# --- workspaces -------------------------------------------------------------------------------------

def test_workspace_files_pass_dagster_schema_and_name_the_code_location():
    module = PYPROJECT["tool"]["dagster"]["module_name"]
    location = PYPROJECT["tool"]["dagster"]["code_location_name"]
    for path in (ROOT / "workspace.yaml", DEPLOY / "workspace.yaml"):
        assert process_workspace_config(load_yaml(path)).success, path
    [local] = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    assert local.location_name == location and local.loadable_target_origin.module_name == module
    [grpc] = location_origins_from_yaml_paths([str(DEPLOY / "workspace.yaml")])
    assert grpc.location_name == location
    code = COMPOSE["services"][grpc.host]["command"]  # the host is the code server's service
    assert code[:3] == ["dagster", "code-server", "start"]
    assert code[code.index("-p") + 1] == str(grpc.port)
    assert code[code.index("-m") + 1] == module and code[code.index("--location-name") + 1] == location


# --- compose ----------------------------------------------------------------------------------------

def test_compose_has_every_piece():
    services = COMPOSE["services"]
    assert {"postgres", "minio", "create-bucket", *DAGSTER_SERVICES} <= set(services)
    assert services["create-bucket"]["restart"] == "no"
    code_needs = services["code"]["depends_on"]
    assert code_needs["create-bucket"]["condition"] == "service_completed_successfully"
    assert code_needs["postgres"]["condition"] == "service_healthy"
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["code"]["condition"] == "service_healthy"
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]


def test_compose_gives_every_dagster_process_the_same_delta_settings(instance_yaml):
    envs = {name: compose_env(name) for name in DAGSTER_SERVICES}
    pipeline = {k: v for k, v in envs["code"].items() if k.startswith(("HIPAGES_", "AWS_", "DAGSTER_PG_"))}
    assert pipeline["HIPAGES_STORAGE"] == "delta" and pipeline["HIPAGES_LAKE_URI"].startswith("s3://")
    for name, env in envs.items():
        assert {k: env.get(k) for k in pipeline} == pipeline, name
        assert env_refs(instance_yaml) <= set(env), f"{name} cannot load the instance"
    # Run containers get only what the launcher copies from the daemon's environment.
    copied = set(instance_yaml["run_launcher"]["config"]["env_vars"])
    assert copied == set(pipeline), "run containers must see the code server's settings"
    assert copied <= set(envs["daemon"])


def test_compose_names_match_postgres_the_object_store_the_launcher_and_the_image(instance_yaml):
    services = COMPOSE["services"]
    env = compose_env("code")
    postgres = compose_env("postgres")
    assert env["DAGSTER_PG_HOST"] == "postgres" and env["DAGSTER_PG_PORT"] == "5432"
    assert (env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_PASSWORD"], env["DAGSTER_PG_DB"]) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    minio = compose_env("minio")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    bucket = env["HIPAGES_LAKE_URI"].removeprefix("s3://").split("/")[0]
    assert re.search(rf"mc mb --ignore-existing lake/{re.escape(bucket)}\b", services["create-bucket"]["command"][0])
    launcher = instance_yaml["run_launcher"]["config"]
    assert launcher["network"] == COMPOSE["networks"]["hipages"]["name"]
    assert all(services[name]["networks"] == ["hipages"] for name in services)
    assert launcher["container_kwargs"]["volumes_from"] == [services["code"]["container_name"]]
    assert env["DAGSTER_CURRENT_IMAGE"] == services["code"]["image"]
    for name in ("webserver", "daemon"):  # the workspace file where the image puts it
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == f"{image_env()['DAGSTER_HOME']}/workspace.yaml"
    mounts = compose_mounts("code")  # run containers get these volumes too (volumes_from)
    assert any(env["HIPAGES_SOURCE"].startswith(mount + "/") for mount in mounts)
    assert env["HIPAGES_OUTPUT_DIR"] in mounts


# --- Dockerfile -------------------------------------------------------------------------------------

def test_dockerfile_installs_the_project_with_constraints_as_a_non_root_user_and_its_context_has_it():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    # Editable: load_from_defs_folder finds pyproject.toml above the package (not in site-packages).
    assert re.search(r"pip install -c constraints\.txt -e \.(\s|$)", pip_install_line())
    install_at = [args for _, args in instructions].index(pip_install_line())
    copied_first = {src for op, args in instructions[:install_at] if op == "COPY" for src in args.split()[:-1]}
    assert {"pyproject.toml", "constraints.txt", "README.md", "hipages_pipeline"} <= copied_first
    assert [args for op, args in instructions if op == "WORKDIR"][-1] == "/opt/dagster/app"
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert image_env()["DAGSTER_HOME"]
    assert ("COPY", "deploy/dagster.yaml deploy/workspace.yaml ${DAGSTER_HOME}/") in instructions
    kept = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
            if line.startswith("!")}
    assert {src for op, args in instructions if op == "COPY" for src in args.split()[:-1]} <= kept


def test_dockerfile_pins_match_constraints():
    constraints = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', pip_install_line()))
    assert {"dagster-webserver", "dagster-docker", "dagster-k8s"} <= set(pins)
    for name, version in pins.items():
        # dagster-docker and dagster-k8s are released with dagster-postgres (0.29.x <-> 1.13.x).
        expected = constraints.get(name) or constraints["dagster-postgres"]
        assert version == expected, f"{name}=={version}, constraints.txt says {expected}"


# --- Helm values ------------------------------------------------------------------------------------

def test_helm_values_use_the_charts_keys():
    """Keys as in the chart's values.yaml and schema (dagster 1.13): a misspelt key is ignored by
    the chart, silently."""
    allowed = {
        "": {"global", "postgresql", "generatePostgresqlPasswordSecret", "dagster-user-deployments",
             "runLauncher", "dagsterDaemon", "telemetry"},
        "dagsterDaemon": {"enabled", "runCoordinator", "runMonitoring", "runRetries"},
        "runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "pollIntervalSeconds",
                          "maxResumeRunAttempts", "freeSlotsAfterRunEndSeconds"},
        "runRetries": {"enabled", "maxRetries", "retryOnAssetOrOpFailure"},
        "queuedRunCoordinator": {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
                                 "dequeueUseThreads", "dequeueNumWorkers"},
        "k8sRunLauncher": {"imagePullPolicy", "loadInclusterConfig", "resources", "runK8sConfig"},
        "deployment": {"name", "image", "codeServerArgs", "port", "includeConfigInLaunchedRuns", "env",
                       "envSecrets", "volumes", "volumeMounts", "podSecurityContext", "resources"},
    }
    daemon = HELM["dagsterDaemon"]
    sections = {"": HELM, "dagsterDaemon": daemon, "runMonitoring": daemon["runMonitoring"],
                "runRetries": daemon["runRetries"],
                "queuedRunCoordinator": daemon["runCoordinator"]["config"]["queuedRunCoordinator"],
                "k8sRunLauncher": HELM["runLauncher"]["config"]["k8sRunLauncher"],
                "deployment": HELM["dagster-user-deployments"]["deployments"][0]}
    for name, section in sections.items():
        assert set(section) <= allowed[name], (name, set(section) - allowed[name])


def test_helm_values_match_the_compose_deployment(instance_yaml):
    [deployment] = HELM["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    assert args[args.index("-m") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["HIPAGES_STORAGE"] == "delta" and env["HIPAGES_LAKE_URI"].startswith("s3://")
    compose_settings = {k for k in compose_env("code") if k.startswith("HIPAGES_")}
    assert {k for k in env if k.startswith("HIPAGES_")} == compose_settings
    assert HELM["runLauncher"]["type"] == "K8sRunLauncher" and deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert HELM["postgresql"]["enabled"] is False and HELM["postgresql"]["postgresqlHost"]
    daemon = HELM["dagsterDaemon"]
    retries = instance_yaml["run_retries"]
    assert (daemon["runRetries"]["enabled"], daemon["runRetries"]["maxRetries"],
            daemon["runRetries"]["retryOnAssetOrOpFailure"]) == (
        retries["enabled"], retries["max_retries"], retries["retry_on_asset_or_op_failure"])
    assert daemon["runMonitoring"]["enabled"] and daemon["runMonitoring"]["maxResumeRunAttempts"] == 0
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    [backfill] = [limit["limit"] for limit in queue["tagConcurrencyLimits"] if limit["key"] == "dagster/backfill"]
    assert 1 <= backfill < queue["maxConcurrentRuns"]
    mounts = [mount["mountPath"] for mount in deployment["volumeMounts"]]
    assert any(env["HIPAGES_SOURCE"].startswith(mount + "/") for mount in mounts)
    assert env["HIPAGES_OUTPUT_DIR"] in mounts
