"""Ingest: landed lines -> ``raw_events`` + ``rejected_events`` (hourly), ``rejected_without_hour``."""

from collections import Counter
from collections.abc import Iterator

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from hipages_pipeline.defs.check_helpers import per_hour_check
from hipages_pipeline.defs.common import (
    GROUP,
    OWNERS,
    describe,
    table_metadata,
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
    hour_of,
    hourly_partitions,
    naive_utc_window,
    single_run_backfill,
)
from hipages_pipeline.defs.resources import (
    DATABASE_SCHEMA,
    DuckDBWarehouse,
    QualityThresholds,
)
from hipages_pipeline.defs.warehouse import stored_table
from hipages_pipeline.lib.contract import (
    LANDED_LINES,
    RAW_EVENTS,
    REJECTED_EVENTS,
    REJECTED_WITHOUT_HOUR,
)
from hipages_pipeline.lib.sql.landing import (
    hour_stats_sql,
    raw_events_sql,
    rejected_events_sql,
    rejected_without_hour_sql,
)

FROM_ALL_FILES = [AssetDep("landed_lines", partition_mapping=AllPartitionMapping())]
"""Each hour reads the landed lines of every file (a file's lines may fall in any hour)."""


def _landed_table(warehouse: DuckDBWarehouse) -> str:
    """``analytics.landed_lines``, created empty when nothing was landed yet (an hour with no landed
    line is materialized empty)."""
    with warehouse.connect() as con:
        return stored_table(con, LANDED_LINES)


@multi_asset(
    outs={
        "raw_events": AssetOut(description=describe(RAW_EVENTS), group_name=GROUP, owners=OWNERS, kinds={"duckdb"},
                               metadata=table_metadata(RAW_EVENTS)),
        "rejected_events": AssetOut(description=describe(REJECTED_EVENTS), group_name=GROUP, owners=OWNERS,
                                    kinds={"duckdb"},
                                    metadata=table_metadata(REJECTED_EVENTS)),
    },
    deps=FROM_ALL_FILES,
    check_specs=INGEST_CHECKS,
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
)
def ingest_events(context: AssetExecutionContext, quality: QualityThresholds, warehouse: DuckDBWarehouse) -> Iterator:
    """The window's (one hour or a range) landed lines, from every landed file: events to
    ``raw_events``, quarantine rows to ``rejected_events``. Reads stored rows, never a source file.

    Each landed line with an hour in the window becomes exactly one row of one of the two (see
    their descriptions); the quality gates are judged per hour over the hour's landed lines.
    """
    start, end = naive_utc_window(context.partition_time_window)
    landed, params = _landed_table(warehouse), {"start": start, "end": end}
    raw = DuckDBQuery(raw_events_sql(landed), params=params)
    yield Output(raw, output_name="raw_events")
    rejects = DuckDBQuery(rejected_events_sql(landed), params=params)
    yield Output(rejects, output_name="rejected_events")
    with warehouse.connect() as con:
        stats = {row[0]: row for row in con.execute(hour_stats_sql(landed), params).fetchall()}
        stored = {table: dict(con.execute(
            f"SELECT date_trunc('hour', time_stamp), count(*) FROM {DATABASE_SCHEMA}.{table} "
            "WHERE time_stamp >= $start AND time_stamp < $end GROUP BY 1", params).fetchall())
            for table in ("raw_events", "rejected_events")}
    context.log.info(f"window {start} .. {end}: {sum(row[1] for row in stats.values())} landed lines, "
                     f"{raw.stored['rows']} events, {rejects.stored['rows']} rejected")
    hours = {key: hour_of(key) for key in context.partition_keys}
    yield from per_hour_check(context, {key: check_lines_accounted(
        stats[hour][1] if hour in stats else 0, stored["raw_events"].get(hour, 0),
        stored["rejected_events"].get(hour, 0)) for key, hour in hours.items()})
    yield from per_hour_check(context, {key: check_ambiguous_local_times(
        {hour: stats[hour][3] if hour in stats else 0}, warehouse.source_timezone or "UTC")
        for key, hour in hours.items()})
    # An hour without landed lines has no share to judge (0 of 0 is not 100% rejected).
    yield from per_hour_check(context, {key: check_rejected_share(
        {hour: row[1]} if row[1] else {}, {hour: row[2]} if row[2] else {}, Counter(row[4] or {}),
        quality.max_rejected_share)
        for key, hour in hours.items() for row in [stats.get(hour, (hour, 0, 0, 0, None))]})


@asset(
    group_name=GROUP, owners=OWNERS, kinds={"duckdb"}, description=describe(REJECTED_WITHOUT_HOUR),
    metadata=table_metadata(REJECTED_WITHOUT_HOUR),
    check_specs=[UNPLACED_CHECK],
    deps=FROM_ALL_FILES,
)
def rejected_without_hour(context: AssetExecutionContext, warehouse: DuckDBWarehouse):
    """Quarantine rows that belong to no hour: lines with no usable event time.

    Invalid JSON, blank or undecodable lines, missing/wrong-type/unparseable timestamps, and
    timestamps out of range (before 2017-01-01 or too far in the future) cannot be placed in an
    hourly partition. This unpartitioned table holds all of them, from every landed file (also
    files that have since left the source glob: their lines were read), rebuilt whole from
    ``landed_lines`` on each materialization, so never duplicated. Same columns as
    ``rejected_events`` (time_stamp NULL unless it was out of range).
    """
    landed = _landed_table(warehouse)
    with warehouse.connect() as con:
        reasons = dict(con.execute(f"SELECT reason, count(*) FROM {landed} WHERE hour IS NULL GROUP BY 1 "
                                   "ORDER BY 2 DESC, 1").fetchall())
    rows = sum(reasons.values())
    context.log.info(f"{rows} landed line(s) without a usable event time")
    yield Output(DuckDBQuery(rejected_without_hour_sql(landed)), metadata={
        "rejected_lines": rows, "reasons": MetadataValue.json(reasons)})
    yield check_no_unplaced(reasons)
