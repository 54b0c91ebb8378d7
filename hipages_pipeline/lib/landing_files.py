"""Which source files to land, from their names, sizes and modification times only (no Dagster here).

The landing-files sensor never opens a file. It knows the paths already landed (the
``source_files`` partitions) and keeps a small cursor, :class:`LandingCursor`:

- ``watermark``: the key ``(mtime_ns, path)`` of the last file it requested. Files are taken in
  key order, so every known file whose key is at most the watermark has been requested as it is
  now; a known file with a larger key changed since (a write sets its mtime to "now", later
  than any file requested before);
- ``refused``: a digest of the paths that cannot be partitions, so they are logged once, not
  every tick.

:func:`plan_landing` takes the files that are new (not a partition) or changed (key above the
watermark), settled (mtime at least the settle interval old) and landable, in key order, as many
as fit in ``max_runs`` runs of at most ``max_files`` files each: runs are ranges of the
partitions' order (the known ones, then the new ones appended in path order). The files it
cannot take wait for the next tick, and the watermark stops before them.

Limitation: a file replaced with an older mtime (``cp -p``, ``rsync -t``, ``touch -d``) is not
seen as changed; ``hipages-pipeline run`` (which compares size and mtime per file) lands it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CURSOR_VERSION = 2


@dataclass(frozen=True)
class FileStat:
    """A source file as a path (as the glob matches it), its size in bytes and its mtime in ns."""

    path: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[int, str]:
        """The order in which files are taken, and the watermark's unit."""
        return self.mtime_ns, self.path


def stat_glob(source_glob: str) -> list[FileStat]:
    """The regular files that ``source_glob`` matches (``**`` allowed), one ``os.stat`` each,
    sorted by path; a file that vanishes meanwhile is left out. Never reads a file."""
    found = []
    for name in glob.glob(source_glob, recursive=True):
        try:
            info = os.stat(name)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(FileStat(str(Path(name)), info.st_size, info.st_mtime_ns))
    return sorted(found, key=lambda f: f.path)


@dataclass
class LandingCursor:
    """The sensor's whole state: a watermark ``(mtime_ns, path)`` and the refused paths' digest."""

    mtime_ns: int = 0
    path: str = ""
    refused: str = ""

    @property
    def watermark(self) -> tuple[int, str]:
        return self.mtime_ns, self.path

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        """Read a cursor; an empty, unreadable or older-version one starts from scratch (every
        settled file is landed once more)."""
        try:
            data = json.loads(text) if text else {}
            if data.get("v") != CURSOR_VERSION:
                return cls()
            return cls(int(data["mtime_ns"]), str(data["path"]), str(data.get("refused", "")))
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "mtime_ns": self.mtime_ns, "path": self.path,
                           "refused": self.refused}, separators=(",", ":"))


@dataclass
class LandingPlan:
    """What one tick does: the new partitions (in order), the runs (lists of files, each a
    contiguous range of the partitions' order), the next cursor, and counts for the log."""

    add: list[str]
    runs: list[list[FileStat]]
    cursor: LandingCursor
    counts: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    """The reasons of the refused paths, only when they changed since the last tick."""


def _runs(files: int, max_files: int) -> int:
    """Runs for a block of ``files`` contiguous files."""
    return -(-files // max_files)


def _take(candidates: Sequence[FileStat], index: dict[str, int], max_files: int, max_runs: int) -> list[FileStat]:
    """The longest prefix of ``candidates`` (in key order) that fits in ``max_runs`` runs: known
    files are blocks of contiguous positions in ``index`` (tracked as intervals), new files one
    block appended at the end (counted apart: an upper bound when it joins the last known block)."""
    ends: dict[int, int] = {}  # block start -> end, for the known files taken
    starts: dict[int, int] = {}  # block end -> start
    known_runs = new = 0
    taken: list[FileStat] = []
    for file in candidates:
        position = index.get(file.path)
        if position is None:
            if known_runs + _runs(new + 1, max_files) > max_runs:
                break
            new += 1
        else:
            first = starts.pop(position - 1, position)
            last = ends.pop(position + 1, position)
            before = (_runs(position - first, max_files) if first < position else 0) + \
                (_runs(last - position, max_files) if last > position else 0)
            after = known_runs - before + _runs(last - first + 1, max_files)
            if after + _runs(new, max_files) > max_runs:
                break
            ends.pop(first, None)
            starts.pop(last, None)
            ends[first], starts[last], known_runs = last, first, after
        taken.append(file)
    return taken


def _ranges(taken: Sequence[FileStat], index: dict[str, int], max_files: int) -> list[list[FileStat]]:
    """``taken`` (positions in ``index``) as runs: contiguous positions, at most ``max_files`` each."""
    runs: list[list[FileStat]] = []
    previous = None
    for position, file in sorted((index[f.path], f) for f in taken):
        if runs and previous == position - 1 and len(runs[-1]) < max_files:
            runs[-1].append(file)
        else:
            runs.append([file])
        previous = position
    return runs


def _digest(paths: Sequence[str]) -> str:
    return hashlib.sha1("\0".join(sorted(paths)).encode()).hexdigest()[:16] if paths else ""


def plan_landing(files: Sequence[FileStat], known: Sequence[str], cursor: LandingCursor, cutoff_ns: int,
                 max_files: int, max_runs: int, unlandable: Callable[[str], str | None]) -> LandingPlan:
    """Decide a tick (see the module docstring).

    Args:
        files: the files the glob matches now.
        known: the ``source_files`` partitions, in their order.
        cursor: the last tick's cursor.
        cutoff_ns: now minus the settle interval (ns since the epoch): newer files wait.
        max_files: files per run at most (>= 1).
        max_runs: runs per tick at most (>= 1).
        unlandable: why a path cannot be a partition (None if it can).
    """
    index = {path: position for position, path in enumerate(known)}
    counts = dict.fromkeys(("matched", "new", "changed", "settling", "unchanged", "refused", "gone"), 0)
    counts["matched"] = len(files)
    reasons, candidates = [], []
    for file in files:
        if (reason := unlandable(file.path)) is not None:
            reasons.append(reason)
        elif file.path in index and file.key <= cursor.watermark:
            counts["unchanged"] += 1
        elif file.mtime_ns > cutoff_ns:
            counts["settling"] += 1
        else:
            counts["new" if file.path not in index else "changed"] += 1
            candidates.append(file)
    counts["refused"] = len(reasons)
    counts["gone"] = len(index) - sum(1 for file in files if file.path in index)
    candidates.sort(key=lambda f: f.key)
    taken = _take(candidates, index, max_files, max_runs)
    add = sorted(f.path for f in taken if f.path not in index)
    order = {**index, **{path: len(known) + n for n, path in enumerate(add)}}
    counts["deferred"] = len(candidates) - len(taken)
    refused = _digest(reasons)
    new_cursor = LandingCursor(*max(cursor.watermark, taken[-1].key if taken else cursor.watermark), refused)
    return LandingPlan(add, _ranges(taken, order, max_files), new_cursor, counts,
                       reasons if refused != cursor.refused else [])
