"""Read JSON Lines source files into batches of numbered text lines, without losing any line.

Each batch is a ``pyarrow.Table`` with the columns

============  ======  ===========================================================================
source_file   string  path of the file as matched by the source glob
line_number   int64   1-based line number in that file (after gzip decompression)
line          string  the line's text without its line ending (``\\n`` or ``\\r\\n``); NULL when
                      it is not valid UTF-8
read_error    string  ``invalid_encoding`` when the bytes are not UTF-8, else NULL
raw_excerpt   string  for undecodable lines only: the bytes decoded with replacement characters
============  ======  ===========================================================================

A UTF-8 byte order mark at the start of a file is dropped. Files ending in ``.gz`` are read
through gzip. Lines are split on ``\\n`` only (never on other Unicode line separators), so line
numbers agree with ``wc -l``/editors. Files are read in chunks of about ``chunk_bytes``, so memory
does not grow with the file size.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024


class SourceReadError(RuntimeError):
    """A source file cannot be read at all (missing, unreadable, corrupt gzip stream)."""


def resolve_source_files(source_glob: str) -> list[Path]:
    """Return the files matched by ``source_glob`` (recursive ``**`` allowed), sorted by path.

    Directories are skipped. Returns an empty list when nothing matches: callers decide whether
    that is an error.
    """
    return sorted(Path(p) for p in glob.glob(source_glob, recursive=True) if Path(p).is_file())


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _decode(lines: list[bytes]) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Decode a chunk of raw lines (each ending with ``\\n`` except maybe the last).

    The fast path decodes the whole chunk at once; only a chunk that holds invalid UTF-8 is
    decoded line by line, to find and mark the bad lines.
    """
    try:
        text = b"".join(lines).decode("utf-8")
    except UnicodeDecodeError:
        decoded: list[str | None] = []
        errors: list[str | None] = []
        excerpts: list[str | None] = []
        for raw in lines:  # slow path: only chunks that contain undecodable bytes
            try:
                decoded.append(raw.rstrip(b"\n").decode("utf-8"))
                errors.append(None)
                excerpts.append(None)
            except UnicodeDecodeError:
                decoded.append(None)
                errors.append("invalid_encoding")
                excerpts.append(raw.rstrip(b"\n").decode("utf-8", errors="replace"))
        return decoded, errors, excerpts
    split = text.split("\n")
    if text.endswith("\n"):
        split.pop()
    none = [None] * len(split)
    return split, none, none


def iter_line_batches(
    paths: Sequence[Path], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[pa.Table]:
    """Yield the lines of ``paths``, in order, as pyarrow tables (columns in the module docstring).

    Raises:
        SourceReadError: a file is missing, unreadable, or not a valid gzip stream; the message
            names the file.
    """
    for path in paths:
        first = True
        line_number = 0
        try:
            with _open(path) as handle:
                while True:
                    chunk = handle.readlines(chunk_bytes)
                    if not chunk:
                        break
                    if first and chunk[0].startswith(codecs.BOM_UTF8):
                        chunk[0] = chunk[0][len(codecs.BOM_UTF8) :]
                    first = False
                    lines, errors, excerpts = _decode(chunk)
                    numbers = pa.array(range(line_number + 1, line_number + 1 + len(lines)), pa.int64())
                    line_number += len(lines)
                    yield pa.table(
                        {
                            "source_file": pa.array([str(path)] * len(lines), pa.string()),
                            "line_number": numbers,
                            "line": pa.array(lines, pa.string()),
                            "read_error": pa.array(errors, pa.string()),
                            "raw_excerpt": pa.array(excerpts, pa.string()),
                        }
                    )
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceReadError(f"cannot read source file {path}: {exc}") from exc
