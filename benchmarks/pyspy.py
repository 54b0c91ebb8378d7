"""(a) under py-spy (``python -m benchmarks --profile``): where its time goes, line by line.

:func:`profile` runs :mod:`benchmarks.profile_pipeline` (the CLI's code path, in process, with
timers around the runner's phases and the IO manager) under ``py-spy record``; :func:`hot_lines`
and :func:`exclusive_lines` read py-spy's raw stacks; :func:`render_profile` writes the section
of RESULTS.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from benchmarks.harness import measure
from benchmarks.implementations import PROJECT, VENV_BIN, dagster_home


def profile(work_dir: Path, source: Path, name: str) -> dict:
    """Run (a) under py-spy; return the per-phase/asset timings and the hot lines."""
    directory = work_dir / "profile"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    stacks, timings = directory / "stacks.txt", directory / "timings.json"
    command = [str(VENV_BIN / "py-spy"), "record", "--idle", "--threads", "--nonblocking", "--rate", "20",
               "--format", "raw", "-o", str(stacks), "--", sys.executable, "-m", "benchmarks.profile_pipeline",
               str(source), str(directory / "out"), str(timings)]
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home(work_dir, "profile")), PYTHONPATH=str(PROJECT))
    measurement = measure(command, work_dir / "logs" / "profile.log", env=env, cwd=PROJECT)
    result = {"events_file": name, "wall_seconds": measurement.wall_seconds, "ok": measurement.ok,
              "log": measurement.log}
    if timings.exists():
        result.update(json.loads(timings.read_text()))
    if stacks.exists():
        result["stacks"] = str(stacks)
        result["hot_lines"] = hot_lines(stacks)
        result["exclusive"] = exclusive_lines(stacks, list(result.get("steps", {})))
    return result


def hot_lines(stacks: Path, limit: int = 25) -> list[tuple[str, float]]:
    """From py-spy raw stacks: the main thread's inclusive share of samples per project code line.

    Each sample counts once per distinct ``function (file:line)`` frame of the project's code
    (hipages_pipeline/, benchmarks/ excluded) on its stack.
    """
    samples = _main_thread_samples(stacks)
    if not samples:
        return []
    total = sum(c for _, c in samples)
    shares: dict[str, int] = {}
    for frames, count in samples:
        for frame in dict.fromkeys(f for f in frames if "hipages_pipeline/" in f and "hipages_pipeline_tests" not in f):
            shares[frame] = shares.get(frame, 0) + count
    return [(frame, count / total) for frame, count in sorted(shares.items(), key=lambda x: -x[1])[:limit]]


STEP_FRAMES = ("_whole_tables",)
"""Runner phases that are not Dagster steps, named like steps in the exclusive table."""


def _main_thread_samples(stacks: Path) -> list[tuple[list[str], int]]:
    per_thread: dict[str, list[tuple[list[str], int]]] = {}
    for line in stacks.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            per_thread.setdefault(frames[0], []).append((frames[1:], int(count)))
    if not per_thread:
        return []
    return per_thread[max(per_thread, key=lambda t: sum(c for f, c in per_thread[t] if any("run_pipeline" in x for x in f)))]


def exclusive_lines(stacks: Path, steps: list[str], rate: float = 20.0, limit: int = 30) -> list[dict]:
    """From py-spy raw stacks: main-thread time per (step, deepest project line, library call).

    Each sample is counted once, on the deepest frame of the project's code (hipages_pipeline/)
    on its stack, i.e. the project line that was running or whose library call was; ``calls``
    is the first frame below it (the library function), ``step`` the asset function or runner
    phase above it ("-" for Dagster's own frames, such as the IO manager).
    """
    known = set(steps) | set(STEP_FRAMES)
    totals: dict[tuple[str, str, str], int] = {}
    samples = _main_thread_samples(stacks)
    for frames, count in samples:
        project = [i for i, f in enumerate(frames) if "hipages_pipeline/" in f]
        if not project:
            key = ("-", "(outside the project's code)", frames[-1].split(" (")[0] if frames else "")
        else:
            deepest = project[-1]
            step = next((frames[i].split(" ")[0] for i in project if frames[i].split(" ")[0] in known), "-")
            callee = frames[deepest + 1].split(" (")[0] if deepest + 1 < len(frames) else "(its own code)"
            key = (step, frames[deepest], callee)
        totals[key] = totals.get(key, 0) + count
    total = sum(totals.values()) or 1
    return [{"seconds": count / rate, "share": count / total, "step": step, "line": line,
             "calls": _library_name(callee), "code": _source_line(line)}
            for (step, line, callee), count in sorted(totals.items(), key=lambda x: -x[1])[:limit]]


_WRAPPERS = {"deprecate_nonkeyword_arguments": "DataFrame.to_csv", "PandasDelegate": "Series.dt/.str accessor",
             "_unpack_zerodim_and_defer": "Series operator", "_make_generic_wrapper": "pyarrow.compute"}


def _library_name(frame: str) -> str:
    """A readable name for a library frame (pandas' decorators hide the method's name)."""
    return next((name for marker, name in _WRAPPERS.items() if marker in frame), frame)


def _source_line(frame: str) -> str:
    """The text of the project line a py-spy frame ``function (path:line)`` names, if readable."""
    match = re.search(r"\((hipages_pipeline/[^:]+):(\d+)\)$", frame)
    if not match:
        return ""
    try:
        return (PROJECT / match.group(1)).read_text().splitlines()[int(match.group(2)) - 1].strip()[:110]
    except (OSError, IndexError):
        return ""




def render_profile(profile: dict) -> list[str]:
    total = profile.get("total_seconds") or profile["wall_seconds"]
    timings, steps = profile.get("timings", {}), profile.get("steps", {})
    out = [f"py-spy (20 Hz, wall clock incl. waits) over `run_pipeline` on {profile['events_file']} "
           f"(in process, same code path as the CLI): {total:.1f} s in all.", "",
           "Phases of the run:", "", "| phase | seconds | share |", "| --- | ---: | ---: |"]
    whole = timings.get("phase:whole_tables", {}).get("seconds", 0.0)
    in_steps = sum(v for k, v in steps.items() if not k.startswith("whole_"))  # whole_*: in _whole_tables
    for label, seconds in (("Dagster steps of the hourly runs (sum of step wall times)", in_steps),
                           ("whole-table CSVs (`_whole_tables`)", whole),
                           ("the rest (imports, Dagster run setup/teardown)", max(total - in_steps - whole, 0))):
        out.append(f"| {label} | {seconds:.1f} | {seconds / total:.0%} |")
    io = {k.split(":", 1)[1]: v for k, v in timings.items() if k.startswith("step:")}
    out += ["", "Per step (asset): wall time of the step, of which IO manager loads (inputs) and stores "
            "(outputs: the IO manager runs the asset's DuckDB query, so for raw_events the store is the read of "
            "the source); compute = the rest (the asset's function and its checks):", "",
            "| step | wall | loads | stores | compute | share of run |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for step, seconds in sorted(steps.items(), key=lambda x: -x[1]):
        loads, stores = io.get(step, {}).get("load", 0.0), io.get(step, {}).get("store", 0.0)
        out.append(f"| {step} | {seconds:.1f} | {loads:.1f} | {stores:.1f} | {seconds - loads - stores:.1f} | "
                   f"{seconds / total:.0%} |")
    if profile.get("exclusive"):
        out += ["", "Where the time goes, line by line: each sample counted once, on the deepest line of the "
                "project's code on the stack (the line running, or the library call it made: `calls`); "
                "`step` is the asset or runner phase above it, `-` = Dagster's own frames (IO manager, "
                "event log):", "", "| seconds | share | step | project line | code | calls |",
                "| ---: | ---: | --- | --- | --- | --- |"]
        out += [f"| {e['seconds']:.1f} | {e['share']:.1%} | {e['step']} | `{e['line']}` | "
                f"`{e.get('code', '').replace('|', '¦')}` | `{e['calls']}` |" for e in profile["exclusive"]]
    if profile.get("hot_lines"):
        out += ["", "Hot lines (project code; share of the main thread's samples with the line on the stack, "
                "so nested lines overlap):", "", "| share | frame |", "| ---: | --- |"]
        out += [f"| {share:.1%} | `{frame}` |" for frame, share in profile["hot_lines"]]
    return out
