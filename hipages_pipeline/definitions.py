"""The project's single entry point: ``dagster dev`` and ``dagster job execute`` load ``defs``."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import Definitions

from hipages_pipeline.assets import ALL_ASSETS
from hipages_pipeline.jobs import hipages_etl_job
from hipages_pipeline.resources import default_resources


def build_definitions(resources: Mapping[str, object]) -> Definitions:
    """The project's Definitions with the given resources (the CLI and tests pass their own)."""
    return Definitions(assets=ALL_ASSETS, jobs=[hipages_etl_job], resources=dict(resources))


defs = build_definitions(default_resources())
