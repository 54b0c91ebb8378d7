"""The DuckDB IO manager replaces a partition atomically and inserts columns by name."""

from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterInstance, TableColumn, TableSchema, asset, materialize

from hipages_pipeline.definitions import build_definitions
from hipages_pipeline.defs.io_manager import DuckDBQuery, HipagesDuckDBIOManager
from hipages_pipeline.defs.partitions import hourly_partitions
from hipages_pipeline.defs.resources import EventSource, make_resources
from hipages_pipeline_tests.conftest import run_job

SCHEMA = TableSchema(columns=[TableColumn("key", "VARCHAR"), TableColumn("happened", "TIMESTAMP"), TableColumn("n", "BIGINT")])
HOUR = "2017-02-02-20:00"


@pytest.fixture
def harness(tmp_path):
    """An asset stored by the IO manager whose next output the test sets, and a way to read the table."""
    database = tmp_path / "atomic.duckdb"
    state = {}

    @asset(partitions_def=hourly_partitions, metadata={"partition_expr": "happened", "dagster/column_schema": SCHEMA})
    def numbers() -> pd.DataFrame:
        return state["frame"]

    def write(frame: pd.DataFrame, partition_key: str = HOUR):
        state["frame"] = frame
        return store(numbers, database, partition_key)

    return write, lambda: stored_rows(database)


def store(numbers, database, partition_key: str):
    """Materialize the test asset ``numbers`` for one hour with the project's IO manager."""
    return materialize([numbers], partition_key=partition_key, raise_on_error=False,
                       instance=DagsterInstance.ephemeral(),
                       resources={"io_manager": HipagesDuckDBIOManager(database=str(database), schema="analytics")})


def stored_rows(database) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.sql("SELECT key, happened, n FROM analytics.numbers ORDER BY key").fetchall()


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["key", "happened", "n"])


def test_failed_insert_keeps_the_old_rows(harness):
    write, rows = harness
    assert write(frame(("a", datetime(2017, 2, 2, 20, 1), 1), ("b", datetime(2017, 2, 2, 20, 2), 2))).success
    assert write(frame(("z", datetime(2017, 2, 2, 21, 0), 9)), "2017-02-02-21:00").success
    # The new rows delete the slice first, then fail on insert: "three" is not a BIGINT.
    failed = write(frame(("c", datetime(2017, 2, 2, 20, 3), "three")))
    assert not failed.success
    assert rows() == [("a", datetime(2017, 2, 2, 20, 1), 1), ("b", datetime(2017, 2, 2, 20, 2), 2),
                      ("z", datetime(2017, 2, 2, 21, 0), 9)]


def test_changed_columns_are_refused_and_old_rows_kept(harness):
    write, rows = harness
    assert write(frame(("a", datetime(2017, 2, 2, 20, 1), 1))).success
    result = write(frame(("b", datetime(2017, 2, 2, 20, 2), 2)).rename(columns={"n": "count"}))
    assert not result.success
    error = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error
    assert "differ from the declared schema" in error.cause.message
    assert rows() == [("a", datetime(2017, 2, 2, 20, 1), 1)]


def test_columns_are_matched_by_name_not_position(harness):
    write, rows = harness
    reordered = frame(("a", datetime(2017, 2, 2, 20, 1), 5))[["n", "key", "happened"]]
    assert write(reordered).success
    assert rows() == [("a", datetime(2017, 2, 2, 20, 1), 5)]


def test_rewrite_replaces_only_its_partition_and_empty_frames_make_the_table(harness):
    write, rows = harness
    assert write(frame()).success  # empty: the table is created all the same
    assert rows() == []
    assert write(frame(("a", datetime(2017, 2, 2, 20, 1), 1))).success
    assert write(frame(("z", datetime(2017, 2, 2, 21, 0), 9)), "2017-02-02-21:00").success
    assert write(frame(("b", datetime(2017, 2, 2, 20, 5), 2))).success
    assert rows() == [("b", datetime(2017, 2, 2, 20, 5), 2), ("z", datetime(2017, 2, 2, 21, 0), 9)]


# --------------------------------------------------------------------------- DuckDBQuery outputs (table to table)

@pytest.fixture
def query_harness(tmp_path):
    """Like ``harness``, for an asset that returns a DuckDBQuery (SQL over an Arrow table)."""
    database = tmp_path / "atomic.duckdb"
    state = {}

    @asset(partitions_def=hourly_partitions, metadata={"partition_expr": "happened", "dagster/column_schema": SCHEMA})
    def numbers() -> DuckDBQuery:
        state["query"] = DuckDBQuery(state["sql"], arrow={"incoming": pa.Table.from_pandas(state["frame"])},
                                     params=state.get("params", {}))
        return state["query"]

    def write(frame: pd.DataFrame, sql: str = "SELECT * FROM incoming", partition_key: str = HOUR, **params):
        state.update(frame=frame, sql=sql, params=params)
        return store(numbers, database, partition_key)

    return write, lambda: stored_rows(database), state


def test_query_output_is_stored_by_name_and_reports_its_rows(query_harness):
    write, rows, state = query_harness
    result = write(frame(("a", datetime(2017, 2, 2, 20, 1), 1), ("b", datetime(2017, 2, 2, 20, 2), 2)),
                   "SELECT n * $factor AS n, happened, key FROM incoming", factor=10)
    assert result.success
    assert rows() == [("a", datetime(2017, 2, 2, 20, 1), 10), ("b", datetime(2017, 2, 2, 20, 2), 20)]
    assert state["query"].stored == {"rows": 2, "table": "analytics.numbers"}
    metadata = result.asset_materializations_for_node("numbers")[0].metadata
    assert metadata["dagster/partition_row_count"].value == 2 and "| a " in metadata["preview"].value


def test_query_output_failing_or_with_other_columns_keeps_the_old_rows(query_harness):
    write, rows, _ = query_harness
    assert write(frame(("a", datetime(2017, 2, 2, 20, 1), 1))).success
    renamed = write(frame(("b", datetime(2017, 2, 2, 20, 2), 2)), "SELECT key, happened, n AS count FROM incoming")
    assert not renamed.success
    failing = write(frame(("c", datetime(2017, 2, 2, 20, 3), 3)), "SELECT key, happened, 'three' AS n FROM incoming")
    assert not failing.success
    assert rows() == [("a", datetime(2017, 2, 2, 20, 1), 1)]


# --------------------------------------------------------------------------- upstream partitions never materialized

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "source_event_data.json"


def materialize_only(output_dir: Path, selection: list[str], partition_key: str = HOUR, source: Path = SAMPLE):
    """Materialize the project's assets ``selection`` (not their upstream) for one hour."""
    definitions = build_definitions(make_resources(EventSource(source_glob=str(source)), str(output_dir)))
    assets = [*definitions.assets, *(definitions.asset_checks or [])]
    return materialize(assets, selection=selection, partition_key=partition_key, raise_on_error=False,
                       instance=DagsterInstance.ephemeral(), resources=definitions.resources)


def failure_messages(result) -> str:
    """Every step failure's message and cause chain, as one text."""
    texts = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


def test_downstream_of_a_never_materialized_hour_fails_naming_it(tmp_path):
    out = tmp_path / "out"
    result = materialize_only(out, ["hourly_activity", "hourly_activity_csv", "event_table_csv"])
    assert not result.success
    message = failure_messages(result)
    assert "cleaned_events" in message and "2017-02-02-20:00" in message
    assert not (out / "hourly_activity" / "2017020220.csv").exists()
    assert not (out / "event_table" / "2017020220.csv").exists()
    # after a full run of the hour, the same selection succeeds
    assert run_job(SAMPLE, out, HOUR).success
    again = materialize_only(out, ["hourly_activity", "hourly_activity_csv", "event_table_csv"])
    assert again.success, failure_messages(again)


def test_an_hour_materialized_with_no_events_reads_as_empty(tmp_path, query):
    out = tmp_path / "out"
    empty_hour = "2017-02-02-05:00"  # the sample has no event in this hour
    assert run_job(SAMPLE, out, empty_hour).success
    assert query(out, "SELECT rows FROM {s}._materialized WHERE table_name = 'cleaned_events'")["rows"].tolist() == [0]
    again = materialize_only(out, ["hourly_activity", "hourly_activity_csv"], partition_key=empty_hour)
    assert again.success, failure_messages(again)
    assert (out / "hourly_activity" / "2017020205.csv").read_text().count("\n") == 1  # the header only


def test_materialized_hours_are_recorded_with_their_rows(harness, tmp_path):
    write, _ = harness
    assert write(frame(("a", datetime(2017, 2, 2, 20, 1), 1), ("b", datetime(2017, 2, 2, 20, 2), 2))).success
    assert write(frame(), "2017-02-02-21:00").success
    assert write(frame(("c", datetime(2017, 2, 2, 20, 3), 3))).success  # replaces the hour's record
    with duckdb.connect(str(tmp_path / "atomic.duckdb"), read_only=True) as con:
        recorded = con.sql("SELECT table_name, hour, rows FROM analytics._materialized ORDER BY hour").fetchall()
    assert recorded == [("numbers", datetime(2017, 2, 2, 20), 1), ("numbers", datetime(2017, 2, 2, 21), 0)]


def test_a_failed_write_records_nothing(harness, tmp_path):
    write, _ = harness
    assert not write(frame(("c", datetime(2017, 2, 2, 20, 3), "three"))).success
    with duckdb.connect(str(tmp_path / "atomic.duckdb"), read_only=True) as con:
        tables = con.sql("SELECT table_name FROM duckdb_tables() WHERE table_name = '_materialized'").fetchall()
        recorded = con.sql("SELECT count(*) FROM analytics._materialized").fetchone()[0] if tables else 0
    assert recorded == 0


def test_a_database_from_before_the_bookkeeping_adopts_its_stored_hours(tmp_path, query):
    """An output directory written before `_materialized` existed: its cleaned_events hour is
    adopted on the first read (the downstream-only run succeeds and records it, 242 events); an
    hour it never held still fails."""
    out = tmp_path / "out"
    assert run_job(SAMPLE, out, HOUR).success
    with duckdb.connect(str(out / "hipages.duckdb")) as con:
        con.execute("DROP TABLE analytics._materialized")  # as a database of the previous version
    again = materialize_only(out, ["hourly_activity", "hourly_activity_csv"])
    assert again.success, failure_messages(again)
    adopted = query(out, "SELECT hour, rows FROM {s}._materialized WHERE table_name = 'cleaned_events'")
    assert adopted.values.tolist() == [[pd.Timestamp(2017, 2, 2, 20), 242]]
    other = materialize_only(out, ["hourly_activity"], partition_key="2017-01-01-20:00")
    assert not other.success and "2017-01-01-20:00" in failure_messages(other)
