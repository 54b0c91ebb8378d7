"""Checks of the exports: each CSV file holds exactly the rows of its table slice."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

from hipages_pipeline.defs.check_helpers import (
    check_result,
    check_spec,
    hourly_check_spec,
)


def csv_check_spec(asset: str) -> AssetCheckSpec:
    return hourly_check_spec(asset, "csv_row_count_matches_table",
                 "ERROR, blocking. Each CSV file written holds exactly as many data rows as its table slice "
                 "(read back with a CSV parser, so quoted newlines count once).", blocking=True)



def check_csv_row_counts(asset: str, expected: dict[str, int], actual: dict[str, int]) -> AssetCheckResult:
    wrong = {path: (expected[path], actual.get(path)) for path in expected if expected[path] != actual.get(path)}
    return check_result("csv_row_count_matches_table", asset, not wrong,
                   description=f"{len(expected)} files, {sum(actual.values())} rows",
                   files=len(expected), rows=sum(actual.values()),
                   mismatches=MetadataValue.json({k: list(v) for k, v in wrong.items()}))



def whole_file_check_spec(asset: str) -> AssetCheckSpec:
    return check_spec(asset, "whole_file_matches_table",
                      "ERROR. The whole file holds exactly the rows of its stored table (read back with a CSV "
                      "parser), and no hour of the table lacks its hour file.")


def check_whole_file(asset: str, path, written: int, table_rows: int, missing_hours: list[str]) -> AssetCheckResult:
    """``whole_file_matches_table``: rows parsed from the file vs the stored table's rows."""
    return check_result("whole_file_matches_table", asset, written == table_rows and not missing_hours,
                        description=f"{path}: {written} rows, table {table_rows}"
                        + (f"; {len(missing_hours)} hour file(s) missing" if missing_hours else ""),
                        rows=written, table_rows=table_rows,
                        missing_hour_files=MetadataValue.json(missing_hours[:20]))
