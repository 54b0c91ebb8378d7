"""Asset-check helpers shared by the stages: spec and result builders, counts as markdown.

Each stage's checks (``defs/<stage>/checks.py``) run inside the step that materializes the asset,
in SQL over that run's slice, so their cost is proportional to the slice. A failing blocking ERROR
check fails the step, so nothing downstream is built from bad data; a WARN check only flags.

Checks of the hourly assets are partitioned like their asset (``check_spec(..., partitions_def=
hourly_partitions)``) and report one evaluation per hour, even in a ranged run: Dagster 1.13 gives
a plain ``AssetCheckResult`` a partition only in a single-partition run (none in a ranged run, so
the UI kept only the run's latest result), so ``per_hour_check`` yields one ``AssetCheckEvaluation``
per hour (``partition=hour``) plus the check's output. The UI then shows every hour's outcome in
the check's partition view, and ``get_asset_check_partition_info`` returns it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    MetadataValue,
    Output,
    PartitionsDefinition,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from hipages_pipeline.defs.partitions import hourly_partitions


def check_spec(asset: str, name: str, description: str, blocking: bool = False,
               partitions_def: PartitionsDefinition | None = None) -> AssetCheckSpec:
    """An asset check's spec (``blocking`` ERROR checks stop the downstream steps).

    ``partitions_def``: the asset's own (``hourly_partitions``) for a check of an hourly asset, so
    that each hour keeps its own outcome; its results then go through ``per_hour_check``.
    """
    with warnings.catch_warnings():  # "partitions_def on an AssetCheckSpec" is a preview feature
        warnings.simplefilter("ignore")
        return AssetCheckSpec(name=name, asset=asset, description=description, blocking=blocking,
                              partitions_def=partitions_def)


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


def _materializations_by_hour(context: AssetExecutionContext, asset: AssetKey,
                              hours: list[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each hour's latest materialization of ``asset`` (the one its check evaluates), one query."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset, asset_partitions=hours), limit=len(hours) * 4).records
    latest: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    for record in records:  # newest first
        hour = record.partition_key
        if hour is not None and hour not in latest:
            latest[hour] = AssetCheckEvaluationTargetMaterializationData(
                run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp)
    return latest


def per_hour_check(context: AssetExecutionContext,
                   results: AssetCheckResult | Mapping[str, AssetCheckResult]) -> Iterator[AssetCheckEvaluation | Output]:
    """Report one check (of an hourly asset, spec with ``partitions_def``) once per hour of the run.

    ``results``: ``{partition_key: AssetCheckResult}``, each hour's own evaluation (an hour of the
    run that is missing passes, with ``rows = 0``: nothing to check); or one ``AssetCheckResult``
    computed over the run's whole range, then reported for each hour with ``evaluated_over`` naming
    the range. Each evaluation carries ``hour`` in its metadata. Yield from the asset after its
    ``Output``: ``yield from per_hour_check(context, {hour: check_x(...) for hour in ...})``.
    A failing blocking ERROR evaluation still fails the step. A check that is not selected in this
    run yields nothing.
    """
    hours = list(context.partition_keys)
    single = results if isinstance(results, AssetCheckResult) else None
    by_hour = {} if single is not None else dict(results)
    some = single or next(iter(by_hour.values()), None)
    if some is None:
        raise ValueError("per_hour_check needs at least one AssetCheckResult")
    key = AssetCheckKey(AssetKey.from_coercible(some.asset_key), some.check_name)
    unknown = set(by_hour) - set(hours)
    if unknown:
        raise ValueError(f"check {key.name}: results for hours outside the run: {sorted(unknown)}")
    if key not in context.selected_asset_check_keys:
        return
    spec = context.assets_def.get_spec_for_check_key(key)
    targets = _materializations_by_hour(context, key.asset_key, hours)
    for hour in hours:
        result = single or by_hour.get(hour)
        metadata = dict(result.metadata) if result is not None else {"rows": MetadataValue.int(0)}
        if single is not None and len(hours) > 1:
            metadata["evaluated_over"] = MetadataValue.text(f"{hours[0]} .. {hours[-1]} (the run's range)")
        metadata["hour"] = MetadataValue.text(hour)
        yield AssetCheckEvaluation(
            asset_key=key.asset_key, check_name=key.name, partition=hour,
            passed=result.passed if result is not None else True,
            severity=result.severity if result is not None else AssetCheckSeverity.ERROR,
            description=result.description if result is not None else "nothing to check in this hour",
            metadata=metadata, target_materialization_data=targets.get(hour), blocking=spec.blocking)
    yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))


def hourly_check_spec(asset: str, name: str, description: str, blocking: bool = False) -> AssetCheckSpec:
    """The spec of a check of an hourly asset: partitioned like it, so every hour keeps its outcome."""
    return check_spec(asset, name, description, blocking, partitions_def=hourly_partitions)


def per_hour(context: AssetExecutionContext,
             results: AssetCheckResult | Iterable[AssetCheckResult]) -> Iterator[AssetCheckEvaluation | Output]:
    """Report each check result of an hourly asset once per hour of the run (:func:`per_hour_check`)."""
    for result in [results] if isinstance(results, AssetCheckResult) else results:
        yield from per_hour_check(context, result)
