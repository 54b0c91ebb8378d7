"""Services for the lake tests: PostgreSQL (the Dagster instance's storage) and an S3 endpoint
(moto) for Delta tables on ``s3://``.

Import the fixtures explicitly in a test module::

    from hipages_pipeline_tests.services import postgres_url, s3_endpoint, lake_bucket  # noqa: F401

Where the services come from:

- ``.ci/run`` starts both and exports ``HIPAGES_TEST_POSTGRES_URL`` and ``HIPAGES_TEST_S3_ENDPOINT``;
  the fixtures use them as they are (and fail if they do not answer).
- Without them (a developer's ``pytest``), ``postgres_url`` starts a throwaway PostgreSQL cluster
  for the session when PostgreSQL's binaries are installed (``/usr/lib/postgresql/*/bin``), and
  ``s3_endpoint`` starts ``moto_server`` for the session. Where PostgreSQL is not installed the
  tests that need it are skipped with a message, except in CI (``CI=true``), where that fails:
  CI never skips the lake tests silently.

moto runs as a separate process, not as moto's in-process ``ThreadedMotoServer``: some deltalake
calls (``DeltaTable.history()`` in 1.6.6) hold the GIL while they wait on the network, so an
in-process server thread cannot answer them and the call hangs until delta-rs' retry timeout.

Delta on S3 needs no lock table: delta-rs 1.6 commits a version with a put-if-absent
(``If-None-Match: *``), which moto enforces (412 on an existing key); a writer that loses the
race re-reads the log and retries. ``AWS_S3_LOCKING_PROVIDER``/DynamoDB is not supported any more
in delta-rs 1.x and is not needed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_URL_ENV = "HIPAGES_TEST_POSTGRES_URL"
S3_ENDPOINT_ENV = "HIPAGES_TEST_S3_ENDPOINT"
START_TIMEOUT_S = 60  # bounded wait for a service to answer
POSTGRES_MISSING = ("PostgreSQL is not installed: the lake tests need it; `apt-get install postgresql` "
                    "or run .ci/run, which installs and starts it")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(message: str) -> None:
    """Skip the test with ``message``; in CI, fail it (a lake test must never be skipped there)."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing service fails the lake tests instead of skipping them)",
                    pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_answers(url: str, timeout_s: int = 5) -> str | None:
    """None when ``url`` accepts a connection, else the reason (one line)."""
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=timeout_s).close()
        return None
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


class TemporaryPostgres:
    """A throwaway cluster in a temp folder, on 127.0.0.1:<free port>, trust authentication, fsync
    off; as the ``postgres`` user (else ``nobody``) when run as root, since PostgreSQL refuses root.
    ``start()`` returns the URL of database ``dagster_test``; ``stop()`` stops it and removes it."""

    def __init__(self, bin_dir: Path, database: str = "dagster_test") -> None:
        self.bin_dir = bin_dir
        self.database = database
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="hipages-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.user = None
        if os.geteuid() == 0:
            names = {entry.pw_name for entry in pwd.getpwall()}
            self.user = "postgres" if "postgres" in names else "nobody"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / args[0]), *args[1:]], user=self.user, cwd=self.base,
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> str:
        if self.user:  # the cluster's files belong to the non-root user
            os.chmod(self.base, 0o755)
            shutil.chown(self.base, self.user)
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                         "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed ({self.base}):\n{done.stdout}{done.stderr}")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -F"
        done = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                         "-t", str(START_TIMEOUT_S), "start", timeout=START_TIMEOUT_S + 10)
        if done.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT_S}s on port {self.port}:\n"
                               f"{done.stdout}{done.stderr}{log[-2000:]}")
        done = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        if done.returncode:
            raise RuntimeError(f"createdb {self.database} failed:\n{done.stdout}{done.stderr}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
                if done.returncode and (self.data / "postmaster.pid").exists():
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)  # our own postmaster, by its pid
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of an empty-at-start PostgreSQL database (``postgresql://...@127.0.0.1:<port>/dagster_test``)
    for the session: ``$HIPAGES_TEST_POSTGRES_URL``, else a temporary cluster started here. Tests
    that need their own database use :func:`fresh_postgres_database`."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        reason = postgres_answers(url)
        if reason is None:
            yield url
            return
        if in_ci():
            pytest.fail(f"{POSTGRES_URL_ENV}={url} does not answer: {reason}", pytrace=False)
        # A stale variable in a developer's shell: start a cluster instead (below).
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        unavailable(POSTGRES_MISSING)
    cluster = TemporaryPostgres(bin_dir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def fresh_postgres_database(url: str) -> str:
    """Create a new empty database beside ``url``'s and return its URL (each test's own Dagster
    storage: parallel pytest workers share the server, not the tables). Removed with the cluster
    (CI's is thrown away at the end); drop it yourself if you need to."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    name = f"test_{uuid.uuid4().hex[:12]}"
    con = psycopg2.connect(url, connect_timeout=10)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    dsn = parse_dsn(url)
    auth = dsn.get("user", "postgres") + (f":{dsn['password']}" if dsn.get("password") else "")
    return f"postgresql://{auth}@{dsn.get('host', '127.0.0.1')}:{dsn.get('port', '5432')}/{name}"


def sqlalchemy_url(url: str) -> str:
    """``url`` with the psycopg2 driver named (``postgresql+psycopg2://``), as Dagster needs it:
    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which is not installed (the project
    has psycopg2-binary). libpq and ``psycopg2.connect`` want the bare form: keep that for them."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in {"postgres", "postgresql"} else url


def dagster_postgres_storage(url: str) -> dict:
    """The ``storage:`` section of a dagster.yaml (or ``DagsterInstance.from_config``) that keeps
    runs, events and schedules in PostgreSQL at ``url`` (driver named: :func:`sqlalchemy_url`)."""
    return {"postgres": {"postgres_url": sqlalchemy_url(url)}}


# --- S3 (moto) ----------------------------------------------------------------------------------


def s3_answers(endpoint: str, timeout_s: float = 2) -> str | None:
    """None when an HTTP server answers at ``endpoint`` (any status), else the reason."""
    try:
        urllib.request.urlopen(endpoint, timeout=timeout_s).close()
        return None
    except urllib.error.HTTPError:
        return None  # it answered (S3 says 4xx to an anonymous GET /)
    except OSError as exc:
        return str(exc)


def wait_until(probe, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Call ``probe()`` (None when ready, else a reason) until ready; RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (reason := probe()) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:.0f}s: {reason}")
        time.sleep(0.2)


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment for delta-rs (object_store) and boto3 against ``endpoint``. The same keys work
    as deltalake ``storage_options``. Nothing else is needed for safe concurrent commits: delta-rs
    1.6 uses S3's conditional put (put-if-absent) by default, no lock table."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",  # boto3's name for the region
        "AWS_ALLOW_HTTP": "true",  # the endpoint is http://
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata service for credentials
    }


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an S3 API: ``$HIPAGES_TEST_S3_ENDPOINT``, else ``moto_server``
    started here for the session."""
    endpoint = os.environ.get(S3_ENDPOINT_ENV)
    if endpoint:
        reason = s3_answers(endpoint)
        if reason is not None:
            pytest.fail(f"{S3_ENDPOINT_ENV}={endpoint} does not answer: {reason}", pytrace=False)
        yield endpoint.rstrip("/")
        return
    try:
        import moto.server  # noqa: F401 - moto[server] is a dev dependency
    except ImportError:
        unavailable("moto[server] is not installed: the lake tests need it (`make install` installs it)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        def probe():
            if server.poll() is not None:
                raise RuntimeError(f"moto_server exited with {server.returncode}: {log_path.read_text()[-2000:]}")
            return s3_answers(endpoint)

        wait_until(probe, f"moto_server on {endpoint}")
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def s3_client(endpoint: str):
    import boto3

    env = s3_env(endpoint)
    return boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


@dataclass(frozen=True)
class LakeBucket:
    uri: str  # s3://<bucket>/lake
    bucket: str
    endpoint: str
    env: dict[str, str]  # also set in os.environ for the test; usable as deltalake storage_options


@pytest.fixture
def lake_bucket(s3_endpoint, monkeypatch) -> LakeBucket:
    """A new empty bucket for this test; ``.uri`` is ``s3://<bucket>/lake``. The S3 environment
    (:func:`s3_env`) is set for the test (so code that reads ``AWS_*``, and subprocesses it starts,
    find the endpoint) and given as ``.env``."""
    bucket = f"lake-{uuid.uuid4().hex[:16]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    env = s3_env(s3_endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return LakeBucket(uri=f"s3://{bucket}/lake", bucket=bucket, endpoint=s3_endpoint, env=env)
