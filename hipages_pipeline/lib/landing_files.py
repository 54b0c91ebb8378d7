"""Reading only the new lines of landing files, with a cursor (no Dagster here).

The cursor (JSON) holds, per file path, ``offset`` (bytes consumed), ``lines`` (lines
consumed), ``size`` and ``mtime_ns`` (as seen on the last scan), ``inode``, ``head`` (SHA-1 of
the first ``HEAD_BYTES`` bytes), and for a last line consumed without its newline ``open_line``,
its start ``open_start`` and its hour ``open_hour`` (a partition key); plus ``pending`` hours.

- A file whose size dropped below its offset, whose inode changed or whose first bytes changed
  was truncated or rotated: it is read again from the start.
- A last line without a newline is consumed at once when it is a whole JSON object, else only
  once the file has stayed the same for a whole scan. When the file grows, the newline that
  closes it is skipped; if the writer glued more text onto it, that line is read again whole and
  its old hour is reported in ``NewLines.extra_hours``.
- ``.gz`` files are read whole and their first ``lines`` lines skipped.
- At most ``budget`` new bytes are read per scan (then on to the end of the line).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from hipages_pipeline.lib.events.validation import ValidationSettings
from hipages_pipeline.lib.sql.scan import source_hours

CURSOR_VERSION = 1
HEAD_BYTES = 1024
"""How many first bytes of a file are hashed to recognise a rotated file."""
_BLOCK = 8 * 1024 * 1024

HourKey = Callable[[datetime], str]
"""Turns a naive UTC hour into the key the cursor stores (the partition key)."""


@dataclass
class FileState:
    """What the cursor remembers of one source file (offsets and sizes in bytes)."""

    offset: int = 0
    lines: int = 0
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    head: str = ""
    open_line: bool = False
    open_start: int = 0
    open_hour: str | None = None


@dataclass
class LandingCursor:
    """Per file path its :class:`FileState`, and the hour keys waiting to end."""

    files: dict[str, FileState]
    pending: list[str]

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        """Read a cursor; an empty or unreadable one starts from scratch (every file from zero)."""
        try:
            data = json.loads(text) if text else {}
            files = {path: FileState(**state) for path, state in data.get("files", {}).items()}
            return cls(files=files, pending=sorted(set(data.get("pending", []))))
        except (ValueError, TypeError, AttributeError):
            return cls(files={}, pending=[])

    def dump(self) -> str:
        """The cursor as compact, stable JSON."""
        return json.dumps({"version": CURSOR_VERSION, "files": {p: asdict(s) for p, s in sorted(self.files.items())},
                           "pending": sorted(set(self.pending))}, separators=(",", ":"), sort_keys=True)


@dataclass
class NewLines:
    """The new complete lines of one file, copied to ``path`` (a temporary file)."""

    source: str
    path: Path
    lines: int
    reason: str
    extra_hours: list[str] = field(default_factory=list)
    """Hour keys to redo besides those of the new lines (a continued last line's old hour)."""


@dataclass
class FoundHours:
    """The hours of the new lines: ``keys`` (hour keys), ``lines_read`` and ``placed`` (lines),
    ``files`` (files with new lines)."""

    keys: set[str]
    lines_read: int
    placed: int
    files: int


def _head_digest(path: Path, length: int) -> str:
    """SHA-1 of the first ``length`` bytes of ``path``."""
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read(length)).hexdigest()


def _rotated(path: Path, stat: os.stat_result, previous: FileState) -> str | None:
    """Why the file must be read again from zero (None when it only grew or stayed the same)."""
    if stat.st_size < previous.offset:
        return "truncated"
    if previous.inode and stat.st_ino != previous.inode:
        return "replaced (new inode)"
    if previous.head and _head_digest(path, min(previous.offset, HEAD_BYTES)) != previous.head:
        return "rewritten (first bytes changed)"
    return None


def _is_complete_object(tail: bytes) -> bool:
    """Whether a last line without a newline is a whole JSON object (so not still being written)."""
    try:
        return isinstance(json.loads(tail), dict)
    except ValueError:
        return False


def _copy_new_bytes(path: Path, start: int, size: int, budget: int, stable: bool,
                    target: Path) -> tuple[int, int, int]:
    """Copy the complete lines of ``path`` from byte ``start`` to ``target``.

    Reads up to ``budget`` bytes (then on to the end of the line it is in). A last line without
    a newline is included when it is a whole JSON object or when the file is ``stable``.
    Returns (bytes consumed, lines consumed, length of a last line consumed without newline or 0).
    """
    consumed = lines = 0
    pending = b""
    with open(path, "rb") as source, open(target, "wb") as out:
        source.seek(start)
        position = start
        while position < size:
            block = source.read(min(_BLOCK, size - position))
            if not block:
                break
            position += len(block)
            pending += block
            cut = pending.rfind(b"\n")
            if cut >= 0:
                out.write(pending[: cut + 1])
                consumed += cut + 1
                lines += pending.count(b"\n", 0, cut + 1)
                pending = pending[cut + 1:]
                if position - start >= budget:
                    break
        if pending and position >= size and (stable or _is_complete_object(pending)):
            out.write(pending)
            return consumed + len(pending), lines + 1, len(pending)
    return consumed, lines, 0


def _hour_of_line(path: Path, start: int, end: int, settings: ValidationSettings, target: Path,
                  hour_key: HourKey) -> str | None:
    """The hour key of the one line in bytes [start, end) of ``path`` (None when it has no hour)."""
    with open(path, "rb") as source, open(target, "wb") as out:
        source.seek(start)
        out.write(source.read(end - start))
    found = source_hours([target], settings)
    return hour_key(found["hour"].iloc[0].to_pydatetime()) if len(found) else None


def _copy_new_gzip_lines(path: Path, skip_lines: int, target: Path) -> int:
    """Copy the decompressed lines of ``path`` after the first ``skip_lines`` to ``target``;
    returns the file's total number of lines."""
    total = 0
    with gzip.open(path, "rb") as source, open(target, "wb") as out:
        for line in source:
            total += 1
            if total > skip_lines:
                out.write(line if line.endswith(b"\n") else line + b"\n")
    return total


def _scan_gzip(path: Path, state: FileState, size: int, target: Path, reason: str) -> tuple[int, int, str] | None:
    """Copy the new lines of a ``.gz`` file; updates ``state``, returns (new lines, bytes, reason),
    or None when the file cannot be decompressed yet (then ``state`` is marked to be read again)."""
    try:
        total = _copy_new_gzip_lines(path, state.lines, target)
    except (OSError, EOFError):  # still being written: try again next scan
        state.size = state.mtime_ns = 0
        return None
    if total < state.lines:  # fewer lines than consumed: a new file under the old name
        total, reason = _copy_new_gzip_lines(path, 0, target), "rewritten (fewer lines)"
        state.lines = 0
    new_lines, state.lines, state.offset = total - state.lines, total, size
    return new_lines, size, reason


def _scan_plain(path: Path, state: FileState, size: int, budget: int, stable: bool, target: Path,
                reason: str) -> tuple[int, int, str, list[str]]:
    """Copy the new lines of a plain file; updates ``state`` but its ``open_hour``.

    Returns (new lines, bytes consumed, reason, extra hour keys).
    """
    start, extra_hours = state.offset, []
    if state.open_line:  # the last line consumed had no newline yet
        with open(path, "rb") as source:
            source.seek(state.offset)
            closed = source.read(1) == b"\n"
        if closed:  # its newline: not a blank line
            start += 1
        else:  # the writer continued that line: read it again whole, and redo its old hour
            start, reason = state.open_start, "last line continued"
            state.lines -= 1
            extra_hours = [state.open_hour] if state.open_hour else []
        state.open_line, state.open_start, state.open_hour = False, 0, None
    consumed, new_lines, tail = _copy_new_bytes(path, start, size, budget, stable, target)
    state.offset = start + consumed
    state.lines += new_lines
    if tail:
        state.open_line, state.open_start = True, state.offset - tail
    return new_lines, consumed, reason, extra_hours


def scan_file(path: Path, previous: FileState | None, budget: int, settings: ValidationSettings,
              target: Path, hour_key: HourKey) -> tuple[FileState, NewLines | None, int]:
    """Compare a file with its cursor state and copy its new lines to ``target``.

    Returns the file's new state, its new lines (None when there are none) and the bytes read.
    Raises FileNotFoundError when the file vanished.
    """
    stat = path.stat()
    state = FileState(**asdict(previous)) if previous else FileState()
    reason = "new file" if previous is None else "grew"
    rotated = _rotated(path, stat, previous) if previous is not None else None
    if rotated:
        state, reason = FileState(), rotated
    stable = (previous is not None and not rotated and previous.size == stat.st_size
              and previous.mtime_ns == stat.st_mtime_ns)
    state.size, state.mtime_ns, state.inode = stat.st_size, stat.st_mtime_ns, stat.st_ino
    extra_hours: list[str] = []
    if path.suffix == ".gz":
        if stable:
            return state, None, 0
        read = _scan_gzip(path, state, stat.st_size, target, reason)
        if read is None:
            return state, None, 0
        new_lines, consumed, reason = read
    else:
        if stat.st_size == state.offset:
            return state, None, 0
        new_lines, consumed, reason, extra_hours = _scan_plain(path, state, stat.st_size, budget, stable,
                                                               target, reason)
        if state.open_line:
            state.open_hour = _hour_of_line(path, state.open_start, state.offset, settings,
                                            target.with_suffix(".tail.jsonl"), hour_key)
    state.head = _head_digest(path, min(state.offset, HEAD_BYTES)) if state.offset else ""
    new = NewLines(str(path), target, new_lines, reason, extra_hours) if new_lines or extra_hours else None
    return state, new, consumed


def scan_files(files: Sequence[Path], cursor: LandingCursor, budget: int, settings: ValidationSettings,
               workdir: Path, hour_key: HourKey) -> tuple[dict[str, FileState], list[NewLines]]:
    """Scan ``files`` in order, reading at most ``budget`` new bytes in all (files past it keep
    their state for the next scan); vanished files are left out.

    Returns the new state per file path and the new lines found, copied under ``workdir``.
    """
    states: dict[str, FileState] = {}
    found: list[NewLines] = []
    for number, path in enumerate(files):
        previous = cursor.files.get(str(path))
        if budget <= 0:
            if previous is not None:
                states[str(path)] = previous
            continue
        try:
            state, new, consumed = scan_file(path, previous, budget, settings, workdir / f"{number:06d}.jsonl",
                                             hour_key)
        except FileNotFoundError:  # vanished between the glob and the read
            continue
        states[str(path)] = state
        budget -= consumed
        if new is not None:
            found.append(new)
    return states, found


def found_hours(found: Sequence[NewLines], settings: ValidationSettings, hour_key: HourKey) -> FoundHours:
    """The hour keys of the new lines (with their ``extra_hours``) and how many lines were read
    and placed in an hour.

    Raises:
        SourceReadError: a copied file cannot be read.
    """
    if not found:
        return FoundHours(set(), 0, 0, 0)
    hours = source_hours([new.path for new in found], settings)
    keys = {hour_key(hour.to_pydatetime()) for hour in hours["hour"]}
    keys |= {hour for new in found for hour in new.extra_hours}
    return FoundHours(keys, hours.attrs["lines_read"], int(hours["lines"].sum()), len(found))
