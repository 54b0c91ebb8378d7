"""The benchmark's input files: generated once per spec, then split (by UTC hour, or into N parts).

Every file is cached in the work directory next to a ``.spec.json`` stamp and reused while the
spec (and, for generated files, the generator's code) is unchanged; the seconds it took to make
are kept beside it (``.seconds``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
START = "2017-02-02T00:00"
TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*"(\d\d/\d\d/\d{4} \d\d):')
"""A line's event hour, where the fast path (the generator's layout: timestamp last) fails."""


def _cached(target: Path, spec: dict, make: Callable[[], None]) -> float:
    """Run ``make`` unless ``target`` exists with the same ``spec``; return the seconds it took
    (then or when it was made)."""
    stamp = target.with_name(target.name + ".spec.json")
    seconds = target.with_name(target.name + ".seconds")
    if target.exists() and stamp.exists() and seconds.exists() and json.loads(stamp.read_text()) == spec:
        return float(json.loads(seconds.read_text()))
    stamp.unlink(missing_ok=True)
    began = time.monotonic()
    make()
    took = time.monotonic() - began
    stamp.write_text(json.dumps(spec))
    seconds.write_text(json.dumps(took))
    return took


def generate(work_dir: Path, events: int, hours: int, anomaly_rate: float, duplicate_rate: float,
             seed: int) -> tuple[Path, float, dict]:
    """``hipages-pipeline generate`` into ``<work_dir>/events_<N>.json`` (cached); (path, seconds, spec)."""
    path = work_dir / f"events_{events}.json"
    spec = {"events": events, "hours": hours, "anomaly_rate": anomaly_rate, "duplicate_rate": duplicate_rate,
            "seed": seed, "start": START,
            "generator_mtime": max(p.stat().st_mtime for p in (PROJECT / "hipages_pipeline" / "lib").rglob("*.py"))}
    command = [sys.executable, "-m", "hipages_pipeline.cli", "generate", "--events", str(events), "--start", START,
               "--hours", str(hours), "--anomaly-rate", str(anomaly_rate), "--duplicate-rate", str(duplicate_rate),
               "--seed", str(seed), "--out", str(path)]
    seconds = _cached(path, spec, lambda: subprocess.run(command, check=True, cwd=PROJECT,
                                                         stdout=subprocess.DEVNULL))
    return path, seconds, spec


def _line_ends(data: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))


def _hour_label(text: bytes) -> str | None:
    try:
        return datetime.strptime(text.decode(), "%d/%m/%Y %H").strftime("%Y%m%d%H")
    except ValueError:
        return None


def _hours_of_lines(data: bytes, ends: np.ndarray, labels: dict[str, int]) -> np.ndarray:
    """Per line (ending at ``ends``) the code of its UTC hour (``labels``: ``YYYYMMDDHH`` -> code,
    extended here), or -1 when it has none.

    Fast path for the generator's layout (``"timestamp" : "DD/MM/YYYY HH:MM:SS"}`` ends the line):
    the 13 bytes ``DD/MM/YYYY HH`` at a fixed distance from the line end, parsed once per distinct
    value; the other lines go through the regular expression :data:`TIMESTAMP`.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    long_enough = ends >= 22
    fixed = ends[long_enough]
    keys = np.full(len(ends), b"", dtype="S13")
    keys[long_enough] = array[fixed[:, None] - 21 + np.arange(13)].copy().view("S13").ravel()
    shaped = np.zeros(len(ends), dtype=bool)
    shaped[long_enough] = (array[fixed - 1] == ord("}")) & (array[fixed - 22] == ord('"'))
    distinct, inverse = np.unique(keys, return_inverse=True)
    codes_of_distinct = np.array([labels.setdefault(label, len(labels)) if (label := _hour_label(key)) else -1
                                  for key in distinct], dtype=np.int64)
    codes = np.where(shaped, codes_of_distinct[inverse.ravel()], -1)
    starts = np.concatenate(([0], ends[:-1] + 1))
    for i in np.flatnonzero(codes < 0):  # corrupt lines and other layouts
        match = TIMESTAMP.search(data, int(starts[i]), int(ends[i]))
        label = _hour_label(match.group(1)) if match else None
        if label:
            codes[i] = labels.setdefault(label, len(labels))
    return codes


def _split_hours(source: Path, directory: Path, chunk_bytes: int) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    labels: dict[str, int] = {}
    handles: dict[int, object] = {}
    current = -1  # the hour of the last line written
    carry = b""

    def write(code: int, chunk: bytes) -> None:
        if code not in handles:
            name = next((label for label, c in labels.items() if c == code), "unknown")
            handles[code] = open(directory / f"{name}.json", "wb")
        handles[code].write(chunk)

    try:
        with open(source, "rb") as handle:
            while True:
                block = handle.read(chunk_bytes)
                data = carry + block
                if not data:
                    break
                cut = data.rfind(b"\n") + 1 if block else len(data)
                data, carry = data[:cut], data[cut:]
                if not data:
                    continue
                if not data.endswith(b"\n"):
                    data += b"\n"  # the file's last line, without its line end
                ends = _line_ends(data)
                codes = _hours_of_lines(data, ends, labels)
                # a line without an hour goes with the line before it (the first ones: the first hour)
                known = np.where(codes >= 0, np.arange(len(codes)), -1)
                np.maximum.accumulate(known, out=known)
                first = current if current >= 0 else (int(codes[codes >= 0][0]) if (codes >= 0).any() else -1)
                codes = np.where(known >= 0, codes[np.maximum(known, 0)], first)
                changes = np.flatnonzero(codes[1:] != codes[:-1]) + 1
                begins = [0, *(int(ends[i - 1]) + 1 for i in changes)]
                for begin, end, code in zip(begins, [*begins[1:], len(data)], codes[[0, *changes]]):
                    write(int(code), data[begin:end])
                current = int(codes[-1])
    finally:
        for out in handles.values():
            out.close()


def split_by_hour(source: Path, spec: dict, chunk_bytes: int = 64 << 20) -> tuple[Path, float]:
    """Split ``source`` into one file per UTC hour of its events, ``<source stem>_hours/<YYYYMMDDHH>.json``
    (cached); return the directory and the seconds it took.

    Lines keep their order within each file. A line without a usable hour (a corrupt line) goes to
    the file of the line before it, as a receiver writing hourly files would put it.
    """
    directory = source.with_name(f"{source.stem}_hours")
    seconds = _cached(directory, {**spec, "split": "hour"}, lambda: _split_hours(source, directory, chunk_bytes))
    return directory, seconds


def _split_parts(source: Path, directory: Path, files: int) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    data = source.read_bytes()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    ends = _line_ends(data)
    per_file = max(1, -(-len(ends) // files))
    begin = 0
    for number, first in enumerate(range(0, len(ends), per_file)):
        last = int(ends[min(first + per_file, len(ends)) - 1]) + 1
        (directory / f"{number:05d}.json").write_bytes(data[begin:last])
        begin = last


def split_into_files(source: Path, spec: dict, files: int) -> tuple[Path, float]:
    """Split ``source`` into ``files`` files of consecutive lines (the same number of lines each, the
    last one fewer), ``<source stem>_<files>_files/<NNNNN>.json`` (cached); the directory and seconds.

    The names sort in the lines' order, as the pipeline reads the files of a glob (sorted by path).
    """
    directory = source.with_name(f"{source.stem}_{files}_files")
    seconds = _cached(directory, {**spec, "split": files}, lambda: _split_parts(source, directory, files))
    return directory, seconds


def size_of(path: Path) -> tuple[int, int]:
    """(files, bytes) of a file or of the ``*.json`` files of a directory."""
    paths = sorted(path.glob("*.json")) if path.is_dir() else [path]
    return len(paths), sum(p.stat().st_size for p in paths)
