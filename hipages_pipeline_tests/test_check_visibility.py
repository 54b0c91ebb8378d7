"""Every hour's check outcome is visible in the UI, also when one run covers a range of hours.

Dagster 1.13 gives an ``AssetCheckResult`` a partition only in a single-partition run, so a ranged
run used to leave one result (no hour) per check. ``per_hour_check`` reports one evaluation per
hour of the run against partitioned check specs; the UI's check partition view and
``get_asset_check_partition_info`` then show each hour.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    asset,
    materialize,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from hipages_pipeline.defs.check_helpers import (
    check_result,
    check_spec,
    per_hour_check,
)
from hipages_pipeline.defs.partitions import hour_of, hourly_partitions, partition_key, range_tags
from hipages_pipeline_tests.conftest import SAMPLE, run_job

FIRST, LAST = "2017-02-02-19:00", "2017-02-02-21:00"  # the sample's busiest hour (242 lines) and its neighbours
HOURS = ["2017-02-02-19:00", "2017-02-02-20:00", "2017-02-02-21:00"]


def _sample_lines_per_hour() -> Counter:
    import json
    return Counter(partition_key(datetime.strptime(json.loads(line)["timestamp"], "%d/%m/%Y %H:%M:%S")
                                 .replace(minute=0, second=0)) for line in SAMPLE.open())


def _sample_lines_asset(max_lines: int, blocking_error: bool):
    per_hour = check_spec("sample_lines", "few_lines", "WARN. At most max_lines lines in the hour.",
                          partitions_def=hourly_partitions)
    whole = check_spec("sample_lines", "lines_found", "ERROR, blocking. The range has lines.",
                       blocking=True, partitions_def=hourly_partitions)

    @asset(name="sample_lines", partitions_def=hourly_partitions, check_specs=[per_hour, whole])
    def sample_lines(context):  # (no annotation: this module's annotations are strings)
        counts = _sample_lines_per_hour()
        results = {hour: check_result("few_lines", "sample_lines", counts[hour] <= max_lines,
                                      AssetCheckSeverity.WARN, f"{counts[hour]} lines", lines=counts[hour])
                   for hour in context.partition_keys}
        total = sum(counts[hour] for hour in context.partition_keys)
        yield MaterializeResult()
        yield from per_hour_check(context, results)
        yield from per_hour_check(context, check_result("lines_found", "sample_lines",
                                                        total > 0 and not blocking_error,
                                                        description=f"{total} lines", lines=total))
    return sample_lines


def _partition_statuses(instance: DagsterInstance, name: str) -> dict[str, AssetCheckExecutionRecordStatus]:
    infos = instance.event_log_storage.get_asset_check_partition_info([AssetCheckKey(AssetKey("sample_lines"), name)])
    return {info.partition_key: info.latest_execution_status for info in infos}


def test_ranged_run_reports_each_hours_check_outcome():
    instance = DagsterInstance.ephemeral()
    result = materialize([_sample_lines_asset(100, blocking_error=False)], instance=instance,
                         tags=range_tags(hour_of(FIRST), hour_of(LAST)))
    assert result.success
    S = AssetCheckExecutionRecordStatus
    # the UI's per-partition check status: the 20:00 WARN is on its hour, the other hours passed
    assert _partition_statuses(instance, "few_lines") == {HOURS[0]: S.SUCCEEDED, HOURS[1]: S.FAILED,
                                                          HOURS[2]: S.SUCCEEDED}
    assert _partition_statuses(instance, "lines_found") == dict.fromkeys(HOURS, S.SUCCEEDED)
    evaluations = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == 6
    warned = evaluations[("few_lines", HOURS[1])]
    assert (warned.passed, warned.severity, warned.description) == (False, AssetCheckSeverity.WARN, "242 lines")
    assert warned.metadata["hour"].value == HOURS[1]
    assert warned.target_materialization_data is not None  # linked to that hour's materialization
    assert evaluations[("lines_found", HOURS[0])].metadata["evaluated_over"].value.startswith(FIRST)


def test_failing_blocking_check_still_fails_the_step_per_hour():
    instance = DagsterInstance.ephemeral()
    result = materialize([_sample_lines_asset(1000, blocking_error=True)], instance=instance, raise_on_error=False,
                         tags=range_tags(hour_of(FIRST), hour_of(LAST)))
    assert not result.success
    assert set(_partition_statuses(instance, "lines_found").values()) == {AssetCheckExecutionRecordStatus.FAILED}


def test_pipeline_reports_every_check_for_every_hour_of_a_ranged_run(tmp_path):
    result = run_job(SAMPLE, tmp_path / "out", FIRST, LAST)
    assert result.success
    by_key: dict = {}
    for evaluation in result.get_asset_check_evaluations():
        by_key.setdefault(evaluation.asset_check_key, set()).add(evaluation.partition)
    hourly_keys = {key for key in by_key if key.asset_key.path[0] != "rejected_without_hour"
                   and not key.asset_key.path[0].startswith("whole_")}
    assert hourly_keys and all(by_key[key] == set(HOURS) for key in hourly_keys), by_key
