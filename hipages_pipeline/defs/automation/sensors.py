"""The landing-files sensor: new source lines -> runs for exactly the hours they cover.

Every tick (30 s) the sensor lists the files of the ``source`` resource's glob and reads, in each
file, only the bytes after the offset it stored in its cursor. Those new lines are classified by
the pipeline's own rules (:func:`hipages_pipeline.lib.sql.scan.source_hours`, the same code the
assets and ``hipages-pipeline run`` use), and the sensor requests

- one run of ``hipages_etl_job`` per run of contiguous UTC hours that the new lines fall in:
  a single hour as a partition run, several as one ranged run (tags
  ``dagster/asset_partition_range_start``/``_end``, as ``hipages-pipeline run`` does). Each run
  re-reads all the files for its hours, so late events for an old hour re-materialize that
  hour with every line of it (partition writes are atomic and idempotent);
- when the new lines have no usable event time at all (only bad lines), one run of the
  unpartitioned quarantine ``rejected_without_hour`` alone, so they show up in Dagster. (Any
  run of ``hipages_etl_job`` rebuilds that asset too, so it is not requested separately then.)

Hours that have not ended yet are not partitions yet: they wait in the cursor (``pending``) and
are requested on the first tick after they end.

The cursor (JSON) holds, per file path, ``offset`` (bytes consumed), ``lines`` (lines
consumed), ``size`` and ``mtime_ns`` (as seen on the last tick), ``inode``, ``head`` (a hash of
the first bytes), and for a last line consumed without its newline ``open_line``, its start
``open_start`` and its hour ``open_hour``; plus ``pending`` hours. A file whose size dropped
below its offset, whose inode changed or whose first bytes changed was truncated or rotated: it
is read again from the start (the hours of its old lines are not re-run). A file that
disappears is dropped from the cursor. The cursor is stored by Dagster with each tick, so a
restart carries on where it stopped; the run keys derive from the new cursor, so a tick replayed
after a crash cannot launch the same runs twice.

A last line without a newline is consumed at once when it is a whole JSON object (the sample
ends so), else only once the file has stayed the same for a whole tick (the receiver may still
be writing it). When the file grows, the newline that closes it is skipped (not a blank line);
if instead the writer glued more text onto it, that line is read again whole and its old hour
is re-materialized too. ``.gz`` files are read whole and their first ``lines`` lines skipped. At
most ``max_bytes_per_tick`` new bytes are read per tick; the rest on the next ticks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    Failure,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from hipages_pipeline.defs.automation.jobs import (
    hipages_etl_job,
    session_refresh_request,
)
from hipages_pipeline.defs.automation.schedules import automation_enabled
from hipages_pipeline.defs.common import (
    utc_now,  # module attribute: tests fix the clock
)
from hipages_pipeline.defs.partitions import (
    PARTITION_KEY_FORMAT,
    hour_of,
    partition_key,
    run_ranges,
)
from hipages_pipeline.defs.resources import EventSource
from hipages_pipeline.lib.events.reader import SourceReadError
from hipages_pipeline.lib.events.validation import ValidationSettings
from hipages_pipeline.lib.sql.scan import source_hours

SENSOR_NAME = "hipages_landing_files_sensor"
CURSOR_VERSION = 1
HEAD_BYTES = 1024
"""How many first bytes of a file are hashed to recognise a rotated file."""
DEFAULT_MAX_BYTES_PER_TICK = 128 * 1024 * 1024
_BLOCK = 8 * 1024 * 1024
QUARANTINE_WITHOUT_HOUR = AssetKey("rejected_without_hour")
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class FileState:
    """What the cursor remembers of one source file."""

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
    """The sensor's cursor: per file path its :class:`FileState`, and hours waiting to end."""

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
    """Hours to re-materialize besides those of the new lines (a continued last line's old hour)."""


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
    """Copy the complete lines of ``path`` in [start, ...) to ``target``.

    Reads up to ``budget`` bytes (then on to the end of the line it is in). A last line without
    a newline is included when it is a whole JSON object or when the file is ``stable``
    (unchanged since the last tick).
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


def _hour_of_line(path: Path, start: int, end: int, settings: ValidationSettings, target: Path) -> str | None:
    """The partition key of the hour of the one line in bytes [start, end) of ``path``, if any."""
    with open(path, "rb") as source, open(target, "wb") as out:
        source.seek(start)
        out.write(source.read(end - start))
    found = source_hours([target], settings)
    return found["hour"].iloc[0].strftime(PARTITION_KEY_FORMAT) if len(found) else None


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


def _scan_file(path: Path, previous: FileState | None, budget: int, settings: ValidationSettings,
               workdir: Path, number: int) -> tuple[FileState, NewLines | None, int]:
    """Compare a file with its cursor state and copy its new lines to ``workdir``.

    Returns the file's new state, its new lines (None when there are none) and the bytes read.
    """
    stat = path.stat()
    extra_hours: list[str] = []
    state = FileState(**asdict(previous)) if previous else FileState()
    reason = "new file" if previous is None else "grew"
    rotated = _rotated(path, stat, previous) if previous is not None else None
    if rotated:
        state, reason = FileState(), rotated
    stable = (previous is not None and not rotated and previous.size == stat.st_size
              and previous.mtime_ns == stat.st_mtime_ns)
    state.size, state.mtime_ns, state.inode = stat.st_size, stat.st_mtime_ns, stat.st_ino
    target = workdir / f"{number:06d}.jsonl"
    if path.suffix == ".gz":
        if stable:
            return state, None, 0
        try:
            total = _copy_new_gzip_lines(path, state.lines, target)
        except (OSError, EOFError):  # still being written: try again next tick
            state.size = state.mtime_ns = 0
            return state, None, 0
        if total < state.lines:  # fewer lines than consumed: a new file under the old name
            total, reason = _copy_new_gzip_lines(path, 0, target), "rewritten (fewer lines)"
            state.lines = 0
        new_lines, state.lines, state.offset = total - state.lines, total, stat.st_size
        consumed = stat.st_size
    else:
        if stat.st_size == state.offset:
            return state, None, 0
        start = state.offset
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
        consumed, new_lines, tail = _copy_new_bytes(path, start, stat.st_size, budget, stable, target)
        state.offset = start + consumed
        state.lines += new_lines
        if tail:
            state.open_line, state.open_start = True, state.offset - tail
            state.open_hour = _hour_of_line(path, state.open_start, state.offset, settings,
                                            workdir / f"{number:06d}.tail.jsonl")
    state.head = _head_digest(path, min(state.offset, HEAD_BYTES)) if state.offset else ""
    new = NewLines(str(path), target, new_lines, reason, extra_hours) if new_lines or extra_hours else None
    return state, new, consumed


def _run_request(first: datetime, last: datetime, run_key: str) -> RunRequest:
    """A partition run for one hour, a ranged run (one run, single-run backfill) for several."""
    start, end = first.strftime(PARTITION_KEY_FORMAT), last.strftime(PARTITION_KEY_FORMAT)
    tags = {"hipages/trigger": "landing-files-sensor"}
    if first == last:
        return RunRequest(run_key=f"{start}@{run_key}", partition_key=start, tags=tags)
    return RunRequest(run_key=f"{start}..{end}@{run_key}",
                      tags={**tags, RANGE_START_TAG: start, RANGE_END_TAG: end})


def evaluate_landing_files(context: SensorEvaluationContext, source: EventSource,
                           max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK) -> SensorResult:
    """One tick of the sensor (see the module docstring); returns the run requests and cursor."""
    cursor = LandingCursor.parse(context.cursor)
    try:
        files = source.files()
    except Failure as exc:
        return SensorResult(skip_reason=exc.description, cursor=cursor.dump())
    settings = source.settings()
    new_files: dict[str, FileState] = {}
    found: list[NewLines] = []
    budget = max_bytes_per_tick
    with tempfile.TemporaryDirectory(prefix="hipages_sensor_") as tmp:
        for number, path in enumerate(files):
            previous = cursor.files.get(str(path))
            if budget <= 0:  # read the rest on the next tick
                if previous is not None:
                    new_files[str(path)] = previous
                continue
            try:
                state, new, consumed = _scan_file(path, previous, budget, settings, Path(tmp), number)
            except FileNotFoundError:  # vanished between the glob and the read
                continue
            new_files[str(path)] = state
            budget -= consumed
            if new is not None:
                found.append(new)
                context.log.info(f"{new.source}: {new.reason}, {new.lines} new line(s)")
        gone = sorted(set(cursor.files) - {str(p) for p in files})
        for path in gone:
            context.log.info(f"{path}: gone from the landing folder; dropped from the cursor")
        try:
            hours_found = source_hours([new.path for new in found], settings) if found else None
        except SourceReadError as exc:
            raise Failure(description=f"landing-files sensor: {exc}") from exc
    new_cursor = LandingCursor(files=new_files, pending=list(cursor.pending))
    lines_read = hours_found.attrs["lines_read"] if hours_found is not None else 0
    placed = int(hours_found["lines"].sum()) if hours_found is not None else 0
    hours = {hour.to_pydatetime().strftime(PARTITION_KEY_FORMAT) for hour in (
        hours_found["hour"] if hours_found is not None else [])}
    hours |= {hour for new in found for hour in new.extra_hours}
    now = utc_now()
    wanted = sorted(hours | set(new_cursor.pending))
    ready = [datetime.strptime(key, PARTITION_KEY_FORMAT) for key in wanted
             if datetime.strptime(key, PARTITION_KEY_FORMAT) + timedelta(hours=1) <= now]
    new_cursor.pending = [key for key in wanted if datetime.strptime(key, PARTITION_KEY_FORMAT) + timedelta(hours=1) > now]
    dumped = new_cursor.dump()
    run_key = hashlib.sha1(dumped.encode()).hexdigest()[:16]
    requests = []
    for keys in run_ranges(partition_key(hour) for hour in ready):
        first, last = hour_of(keys.start), hour_of(keys.end)
        requests.append(_run_request(first, last, run_key))
        refresh = session_refresh_request(first, last, now, run_key, {"hipages/trigger": "landing-files-sensor"})
        if refresh is not None:  # sessions of the 24 h before (and the hour after) may change
            requests.append(refresh)
    if not requests and lines_read > placed:
        requests.append(RunRequest(run_key=f"rejected_without_hour@{run_key}",
                                   asset_selection=[QUARANTINE_WITHOUT_HOUR],
                                   tags={"hipages/trigger": "landing-files-sensor"}))
    if requests:
        context.log.info(f"{lines_read} new line(s) in {len(found)} file(s): {placed} in hours "
                         f"{', '.join(sorted(hours)) or '-'}, {lines_read - placed} without an hour; "
                         f"{len(requests)} run(s) requested"
                         + (f"; waiting for the hour(s) to end: {', '.join(new_cursor.pending)}" if new_cursor.pending else ""))
        return SensorResult(run_requests=requests, cursor=dumped)
    if new_cursor.pending and lines_read:
        skip = f"{lines_read} new line(s), all in hours that have not ended: {', '.join(new_cursor.pending)}"
    elif new_cursor.pending:
        skip = f"no new lines in {len(files)} file(s); waiting for hour(s) to end: {', '.join(new_cursor.pending)}"
    else:
        skip = f"no new lines in {len(files)} file(s) matching {source.source_glob}"
    return SensorResult(skip_reason=skip, cursor=dumped)


def build_landing_files_sensor(running: bool | None = None, minimum_interval_seconds: int = 30,
                               max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK) -> SensorDefinition:
    """The landing-files sensor of ``hipages_etl_job`` (on by default when ``HIPAGES_AUTOMATION``
    says so, see :mod:`hipages_pipeline.defs.automation.schedules`)."""
    on = automation_enabled("sensor") if running is None else running

    @sensor(
        name=SENSOR_NAME,
        job=hipages_etl_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if on else DefaultSensorStatus.STOPPED,
        description="Watches the source glob (resource `source`); requests runs for exactly the "
        "hours that new or appended lines fall in (contiguous hours as one ranged run), and a "
        "run of rejected_without_hour when the new lines have no usable event time. Cursor: "
        "byte offset per file. Off unless HIPAGES_AUTOMATION=on or toggled here.",
    )
    def hipages_landing_files_sensor(context: SensorEvaluationContext, source: EventSource) -> SensorResult:
        """Evaluate one tick (see :func:`evaluate_landing_files`)."""
        return evaluate_landing_files(context, source, max_bytes_per_tick)

    return hipages_landing_files_sensor


hipages_landing_files_sensor = build_landing_files_sensor()
