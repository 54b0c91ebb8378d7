"""CSV files as the contract wants them: RFC 4180, UTF-8, header row, NULL as an empty field.

Writing uses pandas' CSV writer (the standard ``csv`` quoting rules: a field holding a comma,
quote or line break is quoted, quotes doubled), with CRLF record ends as RFC 4180 says. Values
are written verbatim: a value starting with ``=``, ``+``, ``-`` or ``@`` is not altered (see the
README on spreadsheet formula injection). Files are written to a temporary file in the same
directory and renamed, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> int:
    """Write ``frame`` to ``path`` atomically; return the number of bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_csv(temporary, index=False, na_rep="", lineterminator="\r\n", encoding="utf-8",
                     quoting=csv.QUOTE_MINIMAL)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.stat().st_size


def count_csv_rows(path: Path) -> int:
    """Number of data rows in a CSV file (header excluded), parsed by the ``csv`` module."""
    with open(path, newline="", encoding="utf-8") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def read_csv_text(path: Path) -> pd.DataFrame:
    """Read one of our CSV files back with every column as text (empty field -> NaN)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
