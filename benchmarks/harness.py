"""Measuring one implementation in its own process (and, for older callers, comparing two outputs)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import compare
from benchmarks.compare import TABLES, Comparison

PAGE = os.sysconf("SC_PAGE_SIZE")
OUTPUT_TABLES = ("event_table", "hourly_activity")


@dataclass
class Measurement:
    """One process run: wall time, CPU time, peak memory, and how it ended.

    peak_rss_bytes is the larger of the kernel's high-water mark of the process (``wait4``'s
    ru_maxrss, which covers the process and its waited-for children) and the largest sum of the
    resident sets of the whole process tree, sampled every ``interval`` seconds.
    """

    command: list[str]
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    returncode: int | None = None
    stopped: str | None = None  # why the harness stopped it (time or memory limit), else None
    load_before: float = 0.0
    log: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped is None

    def as_dict(self) -> dict:
        return asdict(self)


def _process_tree_rss(root: int) -> int:
    """Sum of the resident set sizes (bytes) of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def memory_total_bytes() -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(command: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float | None = None, memory_limit: int | None = None, interval: float = 0.2) -> Measurement:
    """Run ``command`` in its own process group and measure it (see :class:`Measurement`).

    The process is killed (and ``stopped`` says why) when it runs longer than ``timeout``
    seconds or its process tree holds more than ``memory_limit`` bytes. Its stdout and stderr
    go to ``log_path``; the last lines are kept in ``log``.
    """
    result = Measurement(command=[str(c) for c in command], load_before=os.getloadavg()[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        began = time.monotonic()
        process = subprocess.Popen(result.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(interval):
                result.peak_rss_bytes = max(result.peak_rss_bytes, _process_tree_rss(process.pid))
                reason = None
                if timeout is not None and time.monotonic() - began > timeout:
                    reason = f"time limit: killed after {timeout:.0f} s"
                elif memory_limit is not None and result.peak_rss_bytes > memory_limit:
                    reason = f"memory limit: killed at {result.peak_rss_bytes / 2**30:.1f} GiB"
                if reason:
                    result.stopped = reason
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        result.wall_seconds = time.monotonic() - began
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    result.returncode = process.returncode
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    result.peak_rss_bytes = max(result.peak_rss_bytes, usage.ru_maxrss * 1024)
    result.log = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    return result


def compare_outputs(left: tuple[str, Path], right: tuple[str, Path], threads: int = 2) -> list[Comparison]:
    """Compare the whole CSV files of two output directories: event_table.csv and hourly_activity.csv
    always, user_sessions.csv and rejected_events.csv when both directories hold them (the typical
    solution (b) writes only the first two). See :func:`benchmarks.compare.compare_outputs`."""
    tables = tuple(t for t in TABLES if t in OUTPUT_TABLES or all((d / f"{t}.csv").exists() for _, d in (left, right)))
    return compare.compare_outputs(left, right, tables=tables, threads=threads)
