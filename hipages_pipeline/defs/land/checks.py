"""Checks of the landing stage: every line of every landed file accounted for."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetCheckResult, MetadataValue

from hipages_pipeline.defs.check_helpers import check_result, check_spec

LANDING_CHECKS = [
    check_spec("landed_files", "file_lines_accounted",
               "ERROR, blocking. For every file of the run, the lines read equal the file's stored rows: "
               "lines = events + rejected (landed_lines). Failing names the files: lines were lost or "
               "stored twice, and nothing downstream is built.", blocking=True),
]


def check_file_lines_accounted(read: Mapping[str, int], stored: Mapping[str, tuple[int, int]]) -> AssetCheckResult:
    """``read``: lines read per file (every file of the run, 0 for an empty one); ``stored``:
    (events, rejected) stored per file."""
    wrong = {path: (lines, *stored.get(path, (0, 0))) for path, lines in read.items()
             if lines != sum(stored.get(path, (0, 0)))}
    lines = sum(read.values())
    events, rejected = (sum(pair[i] for pair in stored.values()) for i in (0, 1))
    if wrong:
        listed = "; ".join(f"{path}: {n} lines read, {e} events + {r} rejected stored"
                           for path, (n, e, r) in list(wrong.items())[:5])
        description = f"{len(wrong)} of {len(read)} file(s) do not add up: {listed}"
    else:
        description = f"{len(read)} file(s): {lines} lines = {events} events + {rejected} rejected"
    return check_result("file_lines_accounted", "landed_files", not wrong, description=description,
                        files=len(read), lines=lines, events=events, rejected=rejected,
                        files_not_adding_up=MetadataValue.json({p: list(v) for p, v in wrong.items()}))
