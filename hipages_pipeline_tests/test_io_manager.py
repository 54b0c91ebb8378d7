"""The DuckDB IO manager replaces a partition atomically and inserts columns by name."""

from datetime import datetime

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from dagster import DagsterInstance, TableColumn, TableSchema, asset, materialize

from hipages_pipeline.defs.io_manager import DuckDBQuery, HipagesDuckDBIOManager
from hipages_pipeline.defs.partitions import hourly_partitions

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
