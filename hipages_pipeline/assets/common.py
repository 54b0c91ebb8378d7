"""What the assets share: the group, owners, and small helpers for metadata and errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pandas as pd
from dagster import Failure, MetadataValue

from hipages_pipeline.events.reader import SourceReadError

GROUP = "hipages_events"
OWNERS = ["team:data-platform"]
PREVIEW_ROWS = 10


def utc_now() -> datetime:
    """Now, as a naive UTC datetime (how the tables store time)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> MetadataValue:
    """The first rows of a frame as a markdown table for the UI."""
    return MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "(no rows)")


@contextmanager
def source_errors_as_failure() -> Iterator[None]:
    """Turn an unreadable source file into a ``dagster.Failure`` with a clear description."""
    try:
        yield
    except SourceReadError as exc:
        raise Failure(description=str(exc)) from exc
