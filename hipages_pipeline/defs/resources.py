"""Configuration of the pipeline, as Dagster resources (set per deployment, per run or by env var).

=====================  =============================  =========================================
resource key           environment variable           default
=====================  =============================  =========================================
``source``             ``HIPAGES_SOURCE``              ``data/source_event_data.json``
                       ``HIPAGES_SOURCE_TIMEZONE``     ``UTC``
``output``             ``HIPAGES_OUTPUT_DIR``          ``data/output``
``quality``            (none; set in run config)       see :class:`QualityThresholds`
``session_rules``      (none; set in run config)       see :class:`SessionRules` (30 min, 24 h)
``warehouse``          ``HIPAGES_OUTPUT_DIR``          ``<output_dir>/hipages.duckdb``
                       ``HIPAGES_DUCKDB_MEMORY_LIMIT``  ``1GB`` (DuckDB spills to disk past it)
                       ``HIPAGES_DUCKDB_THREADS``       ``2``
                       (from ``source``)               ``source_timezone``: the source's
                       (none; set in run config)       ``rebuild``: ``false``
``io_manager``         (from ``warehouse``)            the same database and DuckDB settings
(storage)              ``HIPAGES_STORAGE``             ``duckdb``; ``delta``: Delta tables under
                       ``HIPAGES_LAKE_URI``            a folder or ``s3://bucket/prefix``
=====================  =============================  =========================================

An output directory keeps the source time zone its hours were computed in (table
``analytics._settings``); a run in another zone is refused unless ``rebuild`` is set. A run's
resource setup removes what a killed run left: ``staging.*`` tables and ``.<name>.<pid>.tmp`` files.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from dagster import ConfigurableResource, EnvVar, Failure, InitResourceContext

from hipages_pipeline.defs.warehouse import (  # noqa: F401 (DuckDBWarehouse and the database names are part of this module's API)
    DATABASE_FILE,
    DATABASE_SCHEMA,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_THREADS,
    DuckDBWarehouse,
    SourceTimezoneMismatchError,
)
from hipages_pipeline.lib.contract import EARLIEST_EVENT_TIME, KNOWN_ACTIVITIES
from hipages_pipeline.lib.events.reader import resolve_source_files
from hipages_pipeline.lib.events.validation import ValidationSettings, check_source_timezone
from hipages_pipeline.lib.sql.sessions import SessionSettings
from hipages_pipeline.lib.storage.csv_files import remove_leftover_temporaries
from hipages_pipeline.lib.storage.duckdb_files import SCRATCH_NAME
from hipages_pipeline.lib.storage.lake import check_lake_uri

DEFAULT_SOURCE = "data/source_event_data.json"
DEFAULT_OUTPUT_DIR = "data/output"


def env_or_default(name: str, default: str) -> str | EnvVar:
    """``EnvVar(name)`` when the variable is set (the UI then shows where the value comes from),
    else ``default``."""
    return EnvVar(name) if os.environ.get(name) else default


class EventSource(ConfigurableResource):
    """The receiver's JSON Lines files and how to read them.

    Attributes:
        source_glob: glob of the source files (``**`` allowed; ``.gz`` files are decompressed).
        source_timezone: IANA time zone in which the events' ``timestamp`` is written.
        max_line_bytes: lines longer than this are quarantined as ``line_too_long``.
        future_tolerance_hours: event times later than now + this are ``timestamp_out_of_range``.
    """

    source_glob: str = DEFAULT_SOURCE
    source_timezone: str = "UTC"
    max_line_bytes: int = 1024 * 1024
    future_tolerance_hours: int = 24

    def files(self) -> list[Path]:
        """The matched files, sorted. Raises ``dagster.Failure`` when nothing matches."""
        files = resolve_source_files(self.source_glob)
        if not files:
            raise Failure(
                description=f"No source file matches {self.source_glob!r} (resource 'source', "
                f"env HIPAGES_SOURCE); relative paths are read from {Path.cwd()}."
            )
        return files

    def settings(self) -> ValidationSettings:
        """Validation settings. Raises ``dagster.Failure`` on an unknown time zone."""
        try:
            check_source_timezone(self.source_timezone)
        except ValueError as exc:
            raise Failure(description=str(exc)) from exc
        return ValidationSettings(
            source_timezone=self.source_timezone,
            earliest=EARLIEST_EVENT_TIME,
            future_tolerance=timedelta(hours=self.future_tolerance_hours),
            max_line_bytes=self.max_line_bytes,
        )


class OutputLocation(ConfigurableResource):
    """Where the CSV files (and, by default, the DuckDB database) are written.

    Attributes:
        output_dir: directory of the outputs; created when missing.
    """

    output_dir: str = DEFAULT_OUTPUT_DIR

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """At a run's start, delete the ``.<name>.<pid>.tmp`` files of writers that are gone (a
        killed run's half-written CSV files); a live process's are kept."""
        removed = remove_leftover_temporaries(Path(self.output_dir))
        if removed and context.log:
            context.log.info(f"removed {len(removed)} temporary file(s) of killed runs under {self.output_dir}")

    def path(self, *parts: str) -> Path:
        """A path under ``output_dir`` (parent directories are created)."""
        path = Path(self.output_dir, *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class QualityThresholds(ConfigurableResource):
    """Thresholds and expectations of the asset checks.

    Attributes:
        max_rejected_share: largest share of a window's lines that may be quarantined (ERROR,
            blocking) - default 5%.
        max_invalid_ip_share: largest share of events with an invalid IP before a WARN (the
            sample has 12%: octets of 333).
        expected_domains: url_level1 values that are ours; others raise a WARN listing them.
        known_activities: activities we know; others raise a WARN listing them.
    """

    max_rejected_share: float = 0.05
    max_invalid_ip_share: float = 0.25
    expected_domains: list[str] = ["hipages.com.au"]
    known_activities: list[str] = list(KNOWN_ACTIVITIES)


class SessionRules(ConfigurableResource):
    """How ``user_sessions`` groups a user's events into sessions.

    Attributes:
        inactivity_timeout_seconds: a gap between two events of more than this many seconds
            starts a new session (default 1800 = 30 minutes; exactly 1800 is the same session).
        max_session_seconds: a session lasts at most this many seconds from its first event; the
            first event after that starts a new session (default 86400 = 24 hours, the largest
            value the asset's 24-hour look-ahead supports).
        per_domain: sessions per (user_id, url_level1) when True (default: a visit to another
            site is another session, as in web analytics), per user_id when False.
    """

    inactivity_timeout_seconds: int = 1800
    max_session_seconds: int = 86400
    per_domain: bool = True

    def settings(self) -> SessionSettings:
        """The rules for :func:`hipages_pipeline.lib.sql.sessions.sessionize`.

        Raises ``dagster.Failure`` when a duration is not a positive whole number of seconds.
        """
        try:
            return SessionSettings(inactivity_timeout_seconds=self.inactivity_timeout_seconds,
                                   max_session_seconds=self.max_session_seconds, per_domain=self.per_domain)
        except ValueError as exc:
            raise Failure(description=f"Invalid session rules (resource 'session_rules'): {exc}") from exc


def database_path(output_dir: str) -> Path:
    """The DuckDB database of an output directory."""
    return Path(output_dir) / DATABASE_FILE


STORAGES = ("duckdb", "delta")
"""Where the tables live: ``duckdb`` (one file in the output directory; the default) or ``delta``
(Delta tables under a lake URI; DuckDB is then each process's engine)."""


def storage_settings(storage: str | None = None, lake_uri: str | None = None) -> tuple[str, str | None]:
    """``(storage, lake URI)``: the arguments, else ``HIPAGES_STORAGE`` (default ``duckdb``) and
    ``HIPAGES_LAKE_URI``; the URI only for ``delta``.

    Raises:
        ValueError: an unknown storage, ``delta`` without a lake URI, or a ``lake_uri`` argument
            on the ``duckdb`` storage (one line each).
    """
    storage = (storage or os.environ.get("HIPAGES_STORAGE") or "duckdb").strip().lower()
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r} (HIPAGES_STORAGE / --storage): expected one of {', '.join(STORAGES)}")
    if storage == "duckdb":
        if lake_uri:
            raise ValueError(f"a lake URI ({lake_uri}) is for the delta storage: add --storage delta "
                             "(or HIPAGES_STORAGE=delta)")
        return storage, None
    return storage, check_lake_uri(lake_uri or os.environ.get("HIPAGES_LAKE_URI"))


def make_resources(source: EventSource, output_dir: str, memory_limit: str | None = None,
                   threads: int | None = None, rebuild: bool = False, storage: str | None = None,
                   lake_uri: str | None = None) -> dict[str, object]:
    """All resources, for a source and an output directory (used by the CLI and the tests).

    DuckDB's memory limit and threads default to ``HIPAGES_DUCKDB_MEMORY_LIMIT`` and
    ``HIPAGES_DUCKDB_THREADS``, then to 1GB and 2. The warehouse gets the source's time zone and
    ``rebuild`` (see :class:`DuckDBWarehouse`). ``storage`` and ``lake_uri``: see
    :func:`storage_settings`; on ``delta`` each process computes in its own scratch DuckDB file in
    the output directory, and the CSV files are still written to the output directory.

    Raises:
        ValueError: ``HIPAGES_DUCKDB_THREADS`` is not a positive whole number, or the storage
            settings are invalid (:func:`storage_settings`).
    """
    storage, lake_uri = storage_settings(storage, lake_uri)
    database = Path(output_dir) / SCRATCH_NAME if lake_uri else database_path(output_dir)
    return {
        "source": source,
        "output": OutputLocation(output_dir=output_dir),
        "quality": QualityThresholds(),
        "session_rules": SessionRules(),
        **warehouse_resources(DuckDBWarehouse(
            database=str(database),
            memory_limit=memory_limit or os.environ.get("HIPAGES_DUCKDB_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT,
            threads=threads or _positive_int_env("HIPAGES_DUCKDB_THREADS", DEFAULT_THREADS),
            source_timezone=source.source_timezone,
            rebuild=rebuild,
            lake_uri=lake_uri,
        )),
    }


def _positive_int_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive whole number, got {text!r}")
    return int(text)


def warehouse_resources(warehouse: DuckDBWarehouse) -> dict[str, object]:
    """The ``warehouse`` resource and the IO manager that stores tables where it keeps them: in
    its DuckDB file, or in its lake (``lake_uri``)."""
    from hipages_pipeline.defs.io_manager import HipagesDuckDBIOManager

    return {
        "warehouse": warehouse,
        "io_manager": HipagesDuckDBIOManager(database=warehouse.database, schema=DATABASE_SCHEMA,
                                             connection_config=warehouse.connection_config(),
                                             lock_wait_seconds=warehouse.lock_wait_seconds,
                                             lake_uri=warehouse.lake_uri),
    }


def default_resources() -> dict[str, object]:
    """The resources of the deployment, read from the environment (see the module docstring)."""
    resources = make_resources(
        EventSource(
            source_glob=env_or_default("HIPAGES_SOURCE", DEFAULT_SOURCE),
            source_timezone=env_or_default("HIPAGES_SOURCE_TIMEZONE", "UTC"),
        ),
        os.environ.get("HIPAGES_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR,
    )
    resources["output"] = OutputLocation(output_dir=env_or_default("HIPAGES_OUTPUT_DIR", DEFAULT_OUTPUT_DIR))
    return resources
