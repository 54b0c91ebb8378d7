"""CSV files as the contract wants them: RFC 4180, UTF-8, header row, NULL as an empty field.

Large tables are written by DuckDB's ``COPY ... TO`` straight from the database
(:func:`copy_to_csv_atomic`), small frames by pandas (:func:`write_csv_atomic`); both follow the
standard quoting rules (a field holding a comma, quote or line break is quoted, quotes doubled),
with CRLF record ends as RFC 4180 says. Values are written verbatim: a value starting with
``=``, ``+``, ``-`` or ``@`` is not altered (see the README on spreadsheet formula injection).
Files are written to a temporary file ``.<name>.hipages-<host>-<pid>.tmp`` in the same directory and renamed, so
a reader never sees a half-written file; a killed writer's temporary files are removed by
:func:`remove_leftover_temporaries`.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import pandas as pd

from hipages_pipeline.lib.processes import host_name, process_exists


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> int:
    """Write ``frame`` to ``path`` atomically; return the number of bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        frame.to_csv(temporary, index=False, na_rep="", lineterminator="\r\n", encoding="utf-8",
                     quoting=csv.QUOTE_MINIMAL)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.stat().st_size


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.hipages-{host_name()}-{os.getpid()}.tmp")


_TEMPORARY_NAME = re.compile(r"\..+\.csv\.hipages-([^-]+)-(\d+)\.tmp")
"""Only this module's temporary files: another tool's ``.tmp`` files are never touched."""


def remove_leftover_temporaries(directory: Path) -> list[Path]:
    """Delete this module's temporary files ``.<name>.csv.hipages-<host>-<pid>.tmp`` in ``directory``
    and its sub-directories one level down (the per-hour folders) whose writer process ``pid`` on
    this host is gone (killed mid-write); return the deleted paths. Another host's (a run
    container sharing the volume) are left to that host.

    A live process's files are kept (it may be writing them). A pid reused by a new process keeps
    its leftover until that process ends; a missing ``directory`` has nothing to delete.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for folder in [directory, *(child for child in directory.iterdir() if child.is_dir())]:
        for path in folder.glob(".*.csv.hipages-*.tmp"):
            match = _TEMPORARY_NAME.fullmatch(path.name)
            if match and match.group(1) == host_name() and not process_exists(int(match.group(2))):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def copy_to_csv_atomic(con, select_sql: str, path: Path) -> tuple[int, int]:
    """Write the rows of ``select_sql`` to ``path`` with DuckDB's ``COPY``, atomically.

    Returns (rows written, bytes written).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        rows = con.execute(f"COPY ({select_sql}) TO '{_quoted(temporary)}' "
                           "(FORMAT csv, HEADER, DELIMITER ',', QUOTE '\"', ESCAPE '\"', NEW_LINE '\r\n')").fetchone()[0]
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return int(rows), path.stat().st_size


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def count_csv_rows(con, path: Path, columns: list[str]) -> int:
    """Number of data rows in a CSV file with a header of ``columns``, parsed by DuckDB's CSV
    reader (RFC 4180 quoting: a quoted line break does not start a row)."""
    spec = ", ".join(f"'{c}': 'VARCHAR'" for c in columns)
    return int(con.execute(
        f"SELECT count(*) FROM read_csv('{_quoted(path)}', header = true, delim = ',', quote = '\"', escape = '\"', "
        f"auto_detect = false, columns = {{{spec}}})").fetchone()[0])


def _copy_rest(source, target, offset: int) -> None:
    """Append ``source`` from byte ``offset`` to ``target``: in the kernel (``os.sendfile``) where
    the platform allows, else through a buffer."""
    size = os.fstat(source.fileno()).st_size
    target.flush()
    try:
        while offset < size:
            sent = os.sendfile(target.fileno(), source.fileno(), offset, size - offset)
            if sent == 0:
                break
            offset += sent
    except (AttributeError, OSError):
        source.seek(offset)
        shutil.copyfileobj(source, target, 16 * 1024 * 1024)


def concatenate_csv_files(parts: list[Path], path: Path, columns: list[str]) -> int:
    """Write one CSV file with the header ``columns`` and the data rows of the files ``parts`` (each
    with that same header), in order; a missing part adds nothing. Returns the bytes written.

    Files whose rows are sorted and whose parts cover disjoint, ordered ranges (one file per hour)
    concatenate into the whole table, sorted the same way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    header = (",".join(columns) + "\r\n").encode("utf-8")
    try:
        with open(temporary, "wb") as out:
            out.write(header)
            for part in parts:
                if not part.exists():
                    continue
                with open(part, "rb") as handle:
                    if handle.read(len(header)) != header:
                        raise ValueError(f"{part} does not start with the header {header!r}")
                    _copy_rest(handle, out, len(header))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.stat().st_size
