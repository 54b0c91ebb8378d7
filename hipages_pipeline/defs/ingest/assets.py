"""Ingest: source JSON Lines -> ``raw_events`` + ``rejected_events`` (hourly), ``rejected_without_hour``."""

from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from hipages_pipeline.defs.check_helpers import per_hour, per_hour_check
from hipages_pipeline.defs.common import (
    GROUP,
    OWNERS,
    describe,
    preview,
    source_errors_as_failure,
    table_metadata,
    utc_now,
)
from hipages_pipeline.defs.ingest.checks import (
    INGEST_CHECKS,
    UNPLACED_CHECK,
    check_ambiguous_local_times,
    check_lines_accounted,
    check_no_unplaced,
    check_rejected_share,
)
from hipages_pipeline.defs.io_manager import DuckDBQuery
from hipages_pipeline.defs.partitions import (
    PARTITION_KEY_FORMAT,
    hour_of,
    hourly_partitions,
    naive_utc_window,
    partition_key,
    single_run_backfill,
)
from hipages_pipeline.defs.resources import (
    DuckDBWarehouse,
    EventSource,
    QualityThresholds,
)
from hipages_pipeline.lib.contract import (
    RAW_EVENTS,
    REJECTED_EVENTS,
    REJECTED_WITHOUT_HOUR,
)
from hipages_pipeline.lib.sql.scan import WindowScanner, scan_unplaced


@multi_asset(
    outs={
        "raw_events": AssetOut(description=describe(RAW_EVENTS), group_name=GROUP, owners=OWNERS, kinds={"duckdb"},
                               metadata=table_metadata(RAW_EVENTS)),
        "rejected_events": AssetOut(description=describe(REJECTED_EVENTS), group_name=GROUP, owners=OWNERS,
                                    kinds={"duckdb"},
                                    metadata=table_metadata(REJECTED_EVENTS)),
    },
    check_specs=INGEST_CHECKS,
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
)
def ingest_events(context: AssetExecutionContext, source: EventSource, quality: QualityThresholds,
                  warehouse: DuckDBWarehouse) -> Iterator:
    """Read every source file once and keep the lines of the run's window (one hour or a range).

    Each line becomes exactly one row of ``raw_events`` or of ``rejected_events`` (see their
    descriptions); lines with no usable event time belong to ``rejected_without_hour``. The
    events stream from the files into DuckDB in Arrow batches (memory does not grow with the
    window); the quarantine rows, few by the blocking share check, are collected on the way.

    Raises:
        dagster.Failure: no file matches the source glob, a file cannot be read, or the source
            time zone is unknown.
    """
    start, end = naive_utc_window(context.partition_time_window)
    with source_errors_as_failure():
        files = source.files()
        scanner = WindowScanner(files, source.settings(), start, end, threads=warehouse.threads,
                                collect_unplaced=False)
        raw = DuckDBQuery("SELECT * FROM window_events", arrow={"window_events": scanner.event_reader()})
        # Storing this output reads the files: the IO manager inserts the batches as they are read.
        yield Output(raw, output_name="raw_events", metadata={"source_files": MetadataValue.json([str(f) for f in files])})
    rejects = scanner.rejects
    rejects = rejects.append_column("rejected_at", pa.array([utc_now()] * rejects.num_rows, pa.timestamp("us")))
    reasons = pc.value_counts(rejects["reason"]).to_pylist() if rejects.num_rows else []
    context.log.info(
        f"{len(files)} file(s), {scanner.lines_read} lines read; window {start} .. {end}: "
        f"{scanner.lines_in_window} lines, {scanner.events_read} events, {rejects.num_rows} rejected"
    )
    yield Output(DuckDBQuery("SELECT * FROM window_rejects", arrow={"window_rejects": rejects}),
                 output_name="rejected_events", metadata={
                     "rejected_lines": rejects.num_rows,
                     "reasons": MetadataValue.json({r["values"]: r["counts"] for r in reasons}),
                 })
    yield from per_hour(context, check_lines_accounted(scanner.lines_in_window, raw.stored["rows"], rejects.num_rows))
    yield from per_hour_check(context, {
        key: check_ambiguous_local_times({hour_of(key): scanner.ambiguous_per_hour.get(hour_of(key), 0)},
                                         source.source_timezone) for key in context.partition_keys})
    yield from per_hour_check(context, _rejected_share_per_hour(scanner, rejects, quality.max_rejected_share))


def _rejected_share_per_hour(scanner: WindowScanner, rejects: pa.Table, max_share: float):
    """``rejected_share_below_threshold`` of each hour with lines, by partition key, with the hour's
    own reasons (the whole window's verdict when no hour has lines)."""
    hours = pc.floor_temporal(rejects["time_stamp"], unit="hour").to_pylist() if rejects.num_rows else []
    reasons: dict = {}
    for hour, reason in zip(hours, rejects["reason"].to_pylist()):
        reasons.setdefault(hour, Counter())[reason] += 1
    rejects_per_hour = scanner.rejects_per_hour  # computed once: the property counts every reject
    verdicts = {partition_key(hour): check_rejected_share({hour: lines}, {hour: rejects_per_hour.get(hour, 0)},
                                                          reasons.get(hour, Counter()), max_share)
                for hour, lines in scanner.lines_per_hour.items()}
    return verdicts or check_rejected_share(scanner.lines_per_hour, rejects_per_hour, Counter(), max_share)


@asset(
    group_name=GROUP, owners=OWNERS, kinds={"duckdb"}, description=describe(REJECTED_WITHOUT_HOUR),
    metadata=table_metadata(REJECTED_WITHOUT_HOUR),
    check_specs=[UNPLACED_CHECK],
)
def rejected_without_hour(context: AssetExecutionContext, source: EventSource, warehouse: DuckDBWarehouse):
    """Quarantine rows that belong to no hour: lines with no usable event time.

    Invalid JSON, blank or undecodable lines, missing/wrong-type/unparseable timestamps, and
    timestamps out of range (before 2017-01-01 or too far in the future) cannot be placed in an
    hourly partition. This unpartitioned table holds all of them for the current source files
    (rebuilt whole on each materialization, so never duplicated), with the same columns as
    ``rejected_events`` (time_stamp NULL unless it was out of range).

    The same light pass (line and timestamp only) counts the lines of every UTC hour: the
    materialization's ``hours_with_lines`` metadata (``{"2017-02-02-20:00": 59, ...}``) tells which
    hourly partitions have data (``hipages-pipeline run`` reads it to plan its ranged runs).

    Raises:
        dagster.Failure: no file matches the source glob or a file cannot be read.
    """
    with source_errors_as_failure():
        files = source.files()
        unplaced, hours, lines_read = scan_unplaced(files, source.settings(), threads=warehouse.threads)
    unplaced = unplaced.to_pandas().assign(rejected_at=utc_now())
    context.log.info(f"{lines_read} lines read, {len(unplaced)} without a usable event time, "
                     f"{len(hours)} hour(s) with lines")
    yield Output(unplaced, metadata={
        "rejected_lines": len(unplaced),
        "lines_read": lines_read,
        "reasons": MetadataValue.json(unplaced["reason"].value_counts().to_dict()),
        "hours_with_lines": MetadataValue.json(
            {hour.strftime(PARTITION_KEY_FORMAT): int(lines) for hour, lines in zip(hours["hour"], hours["lines"])}),
        "preview": preview(unplaced[["source_file", "line_number", "reason", "message"]]),
    })
    yield check_no_unplaced(unplaced)
