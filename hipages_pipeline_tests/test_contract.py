"""The data contract (lib/contract.py) against every form derived from it: Dagster metadata, DuckDB
tables and DDL, Arrow schemas, the SQL that builds each table, the CSV files, docs/data_contract.md.

Each test fails when one derived form is edited by hand and no longer says what the contract says.
"""

from __future__ import annotations

import ast
import csv

import duckdb
import pytest
from dagster import AssetKey, TableSchema

from hipages_pipeline.definitions import defs
from hipages_pipeline.defs.common import column_schema, csv_column_schema
from hipages_pipeline.defs.io_manager import create_table_sql
from hipages_pipeline.lib import contract_doc
from hipages_pipeline.lib.contract import (
    CLEANED_EVENTS,
    DUPLICATE_EVENTS,
    HOURLY_ACTIVITY,
    RAW_EVENTS,
    REJECTED_EVENTS,
    TABLES,
    USER_SESSIONS,
)
from hipages_pipeline.lib.sql.scan import EVENT_SCHEMA, REJECT_SCHEMA
from hipages_pipeline.lib.sql.sessions import sessions_sql
from hipages_pipeline.lib.sql.transforms import cleaned_sql, duplicates_sql, hourly_activity_sql
from hipages_pipeline_tests.conftest import PROJECT_ROOT, query_db

LIB = PROJECT_ROOT / "hipages_pipeline" / "lib"
CSV_TABLES = [t for t in TABLES.values() if t.csv is not None]


def _metadata(asset: str) -> dict:
    return defs.resolve_assets_def(AssetKey(asset)).specs_by_key[AssetKey(asset)].metadata


@pytest.mark.parametrize("table", TABLES.values(), ids=TABLES.keys())
def test_each_stored_asset_declares_the_contract_columns_and_partition(table):
    metadata = _metadata(table.name)
    declared: TableSchema = metadata["dagster/column_schema"]
    assert [(c.name, c.type, c.constraints.nullable) for c in declared.columns] == [
        (c.name, c.type, c.nullable) for c in table.columns]
    # The landing tables are partitioned by source file: the IO manager replaces a file's rows.
    assert metadata.get("partition_expr") == ("source_file" if table.by_source_file else table.partition_expr)
    assert create_table_sql("analytics.t", declared) == table.ddl("analytics.t")


@pytest.mark.parametrize("table", CSV_TABLES, ids=[t.name for t in CSV_TABLES])
def test_each_csv_asset_declares_the_layout_columns(table):
    declared = _metadata(f"{table.csv.directory}_csv")["dagster/column_schema"]
    assert [c.name for c in declared.columns] == list(table.csv.columns)
    assert declared == csv_column_schema(table)
    assert _metadata(f"whole_{table.csv.directory}_csv")["dagster/column_schema"] == declared


def test_arrow_schemas_of_the_scan_are_the_contract_tables():
    assert EVENT_SCHEMA == RAW_EVENTS.arrow_schema()
    assert REJECT_SCHEMA.names == [n for n in REJECTED_EVENTS.column_names if n != "rejected_at"]
    assert REJECT_SCHEMA == REJECTED_EVENTS.arrow_schema().remove(REJECTED_EVENTS.column_names.index("rejected_at"))


def _result_columns(con, sql: str, params=None) -> list[tuple[str, str]]:
    relation = con.execute(f"DESCRIBE {sql}", params or {}).fetchall()
    return [(name, type_) for name, type_, *_ in relation]


def test_the_sql_of_each_table_produces_exactly_its_contract_columns():
    """The transformations, run on empty typed inputs, give the contract's names, order and types."""
    con = duckdb.connect()
    for table in (RAW_EVENTS, CLEANED_EVENTS):
        con.execute(table.ddl(table.name))
    con.execute("CREATE TABLE url_map (url VARCHAR, url_level1 VARCHAR, url_level2 VARCHAR, url_level3 VARCHAR)")
    con.execute("CREATE TABLE other_ips (ip VARCHAR, ip_anonymised VARCHAR)")
    expected = {t.name: [(c.name, c.type) for c in t.columns] for t in TABLES.values()}
    raw = "SELECT * FROM raw_events"
    assert _result_columns(con, duplicates_sql(raw)) == expected["duplicate_events"]
    assert _result_columns(con, cleaned_sql(raw, duplicates_sql(raw), "url_map", "other_ips")) == expected[
        "cleaned_events"]
    assert _result_columns(con, hourly_activity_sql("SELECT * FROM cleaned_events")) == expected["hourly_activity"]
    assert _result_columns(con, sessions_sql("SELECT * FROM cleaned_events"),
                           {"per_domain": True, "timeout": 1800, "cap": 86400}) == expected["user_sessions"]


def test_stored_tables_csv_headers_and_grain_on_the_sample(sample_output):
    for table in TABLES.values():
        described = query_db(sample_output, f"DESCRIBE {{s}}.{table.name}")
        assert list(zip(described["column_name"], described["column_type"])) == [
            (c.name, c.type) for c in table.columns], table.name
        if table.required:
            nulls = " + ".join(f'count(*) FILTER (WHERE "{c}" IS NULL)' for c in table.required)
            assert query_db(sample_output, f"SELECT {nulls} AS n FROM {{s}}.{table.name}")["n"].item() == 0
    for table in CSV_TABLES:
        with open(sample_output / table.csv.whole_file, newline="", encoding="utf-8") as handle:
            assert next(csv.reader(handle)) == list(table.csv.columns)
    # The grain identifies a row: no two rows share it (the sample has rows in every table below).
    for table, key in ((CLEANED_EVENTS, "event_id, date_trunc('hour', time_stamp)"),
                       (HOURLY_ACTIVITY, "time_bucket, url_level1, url_level2, activity"),
                       (USER_SESSIONS, "session_id"), (DUPLICATE_EVENTS, "source_file, line_number")):
        counts = query_db(sample_output, f"SELECT count(*) AS n, count(DISTINCT ({key})) AS k FROM {{s}}.{table.name}")
        assert counts["n"].item() == counts["k"].item(), table.name


def test_docs_data_contract_is_the_rendered_contract():
    committed = (PROJECT_ROOT / "docs" / "data_contract.md").read_text(encoding="utf-8")
    assert committed == contract_doc.render(), "docs/data_contract.md is stale: run `make contract-doc`"


def test_the_library_has_no_dagster_import():
    offenders = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(PROJECT_ROOT)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []


def test_column_schema_carries_nullability_from_the_contract():
    schema = column_schema(CLEANED_EVENTS)
    assert {c.name for c in schema.columns if not c.constraints.nullable} == {
        "event_id", "user_id", "time_stamp", "url_level1", "activity", "source_file", "line_number"}
