"""The project's single entry point: ``dagster dev`` and ``dagster job execute`` load ``defs``.

Besides the assets, job and resources, it sets:

- **code references**: every asset links to the file and line of its definition (the UI's
  "Open source code" / "View in editor"). Set ``HIPAGES_GIT_URL`` (e.g.
  ``https://github.com/acme/hipages``) and optionally ``HIPAGES_GIT_BRANCH`` (default ``main``)
  to link to the repository instead of local paths;
- **automation**: the hourly schedule and the landing-files sensor (off unless
  ``HIPAGES_AUTOMATION`` turns them on, see :mod:`hipages_pipeline.defs.automation.schedules`);
- **the in-process executor**: a run executes its steps one after the other in one process, so a
  run is one DuckDB writer (the multiprocess default would open the database from several step
  processes at once); ``dagster_home/dagster.yaml`` then lets one run at a time in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from dagster import (
    AnchorBasedFilePathMapping,
    Definitions,
    in_process_executor,
    link_code_references_to_git,
    load_from_defs_folder,
    with_source_code_references,
)

from hipages_pipeline.defs.resources import default_resources

PACKAGE_DIR = Path(__file__).resolve().parent


def with_code_references(assets: list) -> list:
    """The assets with code references: local files, or git URLs when ``HIPAGES_GIT_URL`` is set."""
    assets = list(with_source_code_references(assets))
    git_url = os.environ.get("HIPAGES_GIT_URL")
    if git_url:
        assets = list(link_code_references_to_git(
            assets, git_url=git_url, git_branch=os.environ.get("HIPAGES_GIT_BRANCH", "main"),
            file_path_mapping=AnchorBasedFilePathMapping(
                local_file_anchor=PACKAGE_DIR, file_anchor_path_in_repository="hipages_pipeline/"),
        ))
    return assets


@cache
def _stages() -> Definitions:
    """Every asset, check, job, schedule and sensor of the stages under ``hipages_pipeline/defs``."""
    return load_from_defs_folder(path_within_project=PACKAGE_DIR)


def build_definitions(resources: Mapping[str, object]) -> Definitions:
    """The project's Definitions with the given resources (the CLI and tests pass their own)."""
    stages = _stages()
    return Definitions(
        assets=with_code_references(list(stages.assets or [])),
        asset_checks=stages.asset_checks,
        # A module that imports a job (the schedule's, the sensor's) shows it to load_defs again.
        jobs=list({id(job): job for job in stages.jobs or []}.values()),
        schedules=stages.schedules,
        sensors=stages.sensors,
        resources=dict(resources),
        executor=in_process_executor,
    )


defs = build_definitions(default_resources())
