"""Asset-check helpers shared by the stages: spec and result builders, counts as markdown.

Each stage's checks (``defs/<stage>/checks.py``) run inside the step that materializes the asset,
in SQL over that run's slice, so their cost is proportional to the slice. A failing blocking ERROR
check fails the step, so nothing downstream is built from bad data; a WARN check only flags.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec


def check_spec(asset: str, name: str, description: str, blocking: bool = False) -> AssetCheckSpec:
    """An asset check's spec (``blocking`` ERROR checks stop the downstream steps)."""
    return AssetCheckSpec(name=name, asset=asset, description=description, blocking=blocking)


def check_result(name: str, asset: str, passed: bool, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
                 description: str | None = None, **metadata: object) -> AssetCheckResult:
    """An asset check's result with its metadata (values or ``MetadataValue``)."""
    return AssetCheckResult(check_name=name, asset_key=asset, passed=bool(passed), severity=severity,
                            description=description, metadata=metadata)


def counts_inline_md(counts: Mapping[object, int], limit: int = 5) -> str:
    """``a (3), b (1), ...``: the most frequent values, for a check's one-line description."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    shown = ", ".join(f"{value} ({count})" for value, count in ordered[:limit])
    return shown + (f", and {len(ordered) - limit} more" if len(ordered) > limit else "")


def counts_md(counts: Mapping[object, int], limit: int = 20) -> str:
    """``- `value`: count`` lines, most frequent first (counts computed in SQL or by Counter)."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[:limit]
    return "\n".join(f"- `{value}`: {count}" for value, count in ordered) or "(none)"


def sql_counts(con, sql: str, params: list | dict | None = None) -> dict[object, int]:
    """``value -> count`` from a SQL query returning (value, count) rows."""
    return {value: int(count) for value, count in con.execute(sql, params or []).fetchall()}
