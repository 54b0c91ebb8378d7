"""``python -m benchmarks``: the pipeline against a typical solution and DuckDB's lower bound.

    python -m benchmarks --events 1000000 10000000 [--hours 24] [--anomaly-rate 0.001]
        [--duplicate-rate 0.001] [--seed 42] [--work-dir data/output/bench]
        [--results benchmarks/RESULTS.md] [--max-seconds 900] [--partitions 720] [--profile]

For each size it generates the events (``hipages-pipeline generate``, once per spec; the file is
reused while the spec is unchanged), then runs side by side, each in its own process on the
same file:

(a) ``hipages-pipeline run`` end to end (every asset, asset check, quarantine, CSVs), with a
    fresh Dagster instance (a copy of dagster_home/dagster.yaml: SQLite run storage);
(b) :mod:`benchmarks.reference`, the typical solution (json.loads, urllib.parse, pandas groupby);
(c) :mod:`benchmarks.duckdb_sql`, one DuckDB SQL script (the lower bound).

It checks that their event_table.csv and hourly_activity.csv hold the same rows, and records wall
time, events/s, CPU time and peak RSS of each process tree. An implementation whose run at this
size is predicted (linearly from the previous size) to take more than ``--max-seconds`` is not
run, and one that runs past twice that or past 85% of the machine's memory is stopped: RESULTS.md
says so. Then Dagster's fixed cost per partition (one run over ``--partitions`` hours of tiny
data against one run over one hour), and with ``--profile`` a py-spy profile of (a) at the
largest size it ran at. Results go to ``--results``; the section between the ``analysis``
markers of an existing RESULTS.md is kept. ``--update`` adds to the previous report instead of
starting afresh (e.g. ``--events 3000000 --update`` adds one size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.harness import Measurement, compare_outputs, measure, memory_total_bytes

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
IMPLEMENTATIONS = {
    "a": "pipeline (`hipages-pipeline run`)",
    "b": "typical solution (json.loads, urllib, pandas)",
    "c": "DuckDB SQL script (lower bound)",
}
ANALYSIS_START, ANALYSIS_END = "<!-- analysis:start -->", "<!-- analysis:end -->"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="sizes to run, in lines (default: 1000000 10000000)")
    parser.add_argument("--hours", type=int, default=24, help="hours the events span (default %(default)s)")
    parser.add_argument("--anomaly-rate", type=float, default=0.001, help="share of corrupt lines")
    parser.add_argument("--duplicate-rate", type=float, default=0.001, help="share of retried (duplicate) lines")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", default="abc", help="implementations to run, e.g. 'bc' (default: abc)")
    parser.add_argument("--work-dir", type=Path, default=PROJECT / "data" / "output" / "bench",
                        help="generated files, outputs and logs (git-ignored; default %(default)s)")
    parser.add_argument("--results", type=Path, default=PROJECT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="skip a run predicted to take longer; stop one at twice this (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=720,
                        help="hours of tiny data for Dagster's fixed cost per partition; 0 to skip")
    parser.add_argument("--profile", action="store_true", help="profile (a) with py-spy at its largest size")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite --results from the previous report (<work-dir>/report.json)")
    parser.add_argument("--update", action="store_true",
                        help="keep the measurements of the previous report (<work-dir>/report.json) that this "
                        "invocation does not redo (other sizes, implementations not in --only, fixed cost, profile)")
    return parser


# --------------------------------------------------------------------------------------------
# Running


def _generate(args: argparse.Namespace, events: int, hours: int, anomaly_rate: float,
              duplicate_rate: float, name: str) -> tuple[Path, float]:
    """Generate (or reuse) the events file of a spec; return its path and the seconds it took."""
    path = args.work_dir / f"{name}.json"
    spec = {"events": events, "hours": hours, "anomaly_rate": anomaly_rate,
            "duplicate_rate": duplicate_rate, "seed": args.seed, "start": "2017-02-02T00:00"}
    stamp = path.with_suffix(".spec.json")
    # A cached file is reused only while the generator's modules are unchanged.
    spec["generator_mtime"] = max(path.stat().st_mtime for path in (PROJECT / "hipages_pipeline" / "lib").glob("*.py"))
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == spec:
        return path, json.loads(stamp.with_suffix(".seconds").read_text())
    command = [str(VENV_BIN / "hipages-pipeline"), "generate", "--events", str(events), "--start", spec["start"],
               "--hours", str(hours), "--anomaly-rate", str(anomaly_rate), "--duplicate-rate",
               str(duplicate_rate), "--seed", str(args.seed), "--out", str(path)]
    began = time.monotonic()
    subprocess.run(command, check=True)
    seconds = time.monotonic() - began
    stamp.write_text(json.dumps(spec))
    stamp.with_suffix(".seconds").write_text(json.dumps(seconds))
    return path, seconds


def _dagster_home(work_dir: Path, name: str) -> Path:
    """A fresh DAGSTER_HOME with the project's dagster.yaml (SQLite storage, as a deployment has)."""
    home = work_dir / "dagster_home" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def _command(implementation: str, source: Path, output: Path, extra: list[str] | None = None) -> list[str]:
    if implementation == "a":
        return [str(VENV_BIN / "hipages-pipeline"), "run", "--source", str(source), "--output-dir", str(output),
                *(extra or [])]
    module = {"b": "benchmarks.reference", "c": "benchmarks.duckdb_sql"}[implementation]
    return [sys.executable, "-m", module, str(source), str(output)]


def _run(args: argparse.Namespace, implementation: str, source: Path, name: str,
         extra: list[str] | None = None) -> Measurement:
    output = args.work_dir / "out" / f"{name}_{implementation}"
    shutil.rmtree(output, ignore_errors=True)
    env = dict(os.environ, DAGSTER_HOME=str(_dagster_home(args.work_dir, f"{name}_{implementation}")),
               PYTHONPATH=str(PROJECT))
    subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # same warm page cache for all
    result = measure(_command(implementation, source, output, extra), args.work_dir / "logs" / f"{name}_{implementation}.log",
                     env=env, cwd=PROJECT, timeout=2 * args.max_seconds,
                     memory_limit=int(0.85 * memory_total_bytes()))
    result.extra["output"] = str(output)
    result.extra["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=PROJECT).stdout.strip()
    return result


def _predicted_seconds(previous: list[tuple[int, Measurement]], events: int) -> float | None:
    """Linear extrapolation from the largest smaller size that completed."""
    done = [(n, m) for n, m in previous if m.ok and n < events]
    if not done:
        return None
    n, m = max(done, key=lambda item: item[0])
    return m.wall_seconds * events / n


def _fixed_cost(args: argparse.Namespace) -> dict:
    """Dagster's fixed cost per partition: (a) over N hours of tiny data vs over 1 hour."""
    per_hour = 20  # every hour has data, so the N hours are one contiguous range: one run
    runs = {}
    for hours in (1, args.partitions):
        source, _ = _generate(args, per_hour * hours, hours, 0.0, 0.0, f"tiny_{hours}h")
        # One ranged run over all the hours: the partition cap is lifted to the number of hours.
        measurement = _run(args, "a", source, f"tiny_{hours}h", extra=["--max-hours-per-run", str(hours)])
        log = Path(measurement.extra["output"]).parent.parent / "logs" / f"tiny_{hours}h_a.log"
        run_seconds = [float(s) for s in re.findall(r"ok in ([0-9.]+) s", log.read_text())]
        runs[hours] = {"wall": measurement.wall_seconds, "run": sum(run_seconds), "runs": len(run_seconds),
                       "ok": measurement.ok, "events": per_hour * hours}
    assets = _partitioned_assets()
    n = args.partitions
    per_partition = (runs[n]["run"] - runs[1]["run"]) / (n - 1) if n > 1 else runs[n]["run"]
    return {"partitions": n, "runs": runs, "partitioned_assets": assets,
            "ms_per_partition": 1000 * per_partition, "ms_per_partition_per_asset": 1000 * per_partition / len(assets)}


def _partitioned_assets() -> list[str]:
    """The partitioned assets that hipages_etl_job materializes."""
    code = ("from hipages_pipeline.definitions import defs\n"
            "g = defs.resolve_asset_graph()\n"
            "job = defs.resolve_job_def('hipages_etl_job')\n"
            "keys = job.asset_layer.asset_graph.get_all_asset_keys()\n"
            "print(' '.join(sorted(k.to_user_string() for k in keys "
            "if g.get(k).is_materializable and g.get(k).partitions_def is not None)))\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                         cwd=PROJECT, check=True)
    return out.stdout.split()


def _profile(args: argparse.Namespace, source: Path, name: str) -> dict:
    """Run (a) under py-spy; return the per-phase/asset timings and the hot lines."""
    directory = args.work_dir / "profile"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    stacks, timings = directory / "stacks.txt", directory / "timings.json"
    command = [str(VENV_BIN / "py-spy"), "record", "--idle", "--threads", "--nonblocking", "--rate", "20",
               "--format", "raw", "-o", str(stacks), "--", sys.executable, "-m", "benchmarks.profile_pipeline",
               str(source), str(directory / "out"), str(timings)]
    env = dict(os.environ, DAGSTER_HOME=str(_dagster_home(args.work_dir, "profile")), PYTHONPATH=str(PROJECT))
    measurement = measure(command, args.work_dir / "logs" / "profile.log", env=env, cwd=PROJECT)
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


# --------------------------------------------------------------------------------------------
# Reporting


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    versions = {"python": platform.python_version()}
    for package in ("dagster", "dagster-duckdb", "duckdb", "pandas", "pyarrow", "numpy", "publicsuffixlist", "py-spy"):
        try:
            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing optional package is reported as such
            versions[package] = "not installed"
    return versions


def _machine() -> dict[str, str]:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=PROJECT).stdout
    changed = sorted({line[3:] for line in dirty.splitlines() if line.strip()})
    return {"cores": str(os.cpu_count()), "memory": f"{memory_total_bytes() / 2**30:.1f} GiB", "cpu": model,
            "os": platform.platform(),
            "commit": commit + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def render(report: dict, previous_analysis: str) -> str:
    """RESULTS.md from the report (and the kept analysis section)."""
    machine, versions = report["machine"], report["versions"]
    out = [
        "# Benchmark results",
        "",
        f"Written by `make bench` / `python -m benchmarks` on {report['finished']}, from the runs "
        + "; ".join(f"`python -m benchmarks {argv}`" for argv in report["argv"].split("; then ")) + ".",
        "Regenerate with `make bench`; the analysis section below is kept between runs.",
        "",
        f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory']} RAM, {machine['os']}",
        f"- Code: commit {machine['commit']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Data: `hipages-pipeline generate` over {report['hours']} hours from 2017-02-02T00:00, "
        f"anomaly rate {report['anomaly_rate']}, duplicate rate {report['duplicate_rate']}, seed {report['seed']}; "
        "the file is in the page cache for every run (read once before each).",
        "- Each implementation runs in its own process; peak RSS is that of its whole process tree "
        "(kernel high-water mark and /proc sampling every 0.2 s). CPU = user + system seconds. "
        "Load = 1-minute load average when the run started (2 cores: above ~0.5 means another "
        "process competed for the CPU).",
        "",
        "## Side by side",
        "",
        "| events | file | generate | implementation | wall | events/s | CPU | peak RSS | load | status |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for size in report["sizes"]:
        for key, m in size["runs"].items():
            if m.get("skipped"):
                out.append(f"| {size['events']:,} | {size['file_gb']:.2f} GB | {size['generate_seconds']:.1f} s | "
                           f"({key}) {IMPLEMENTATIONS[key]} | - | - | - | - | - | not run: {m['skipped']} |")
                continue
            status = "ok" if m["returncode"] == 0 and not m["stopped"] else (m["stopped"] or f"exit {m['returncode']}")
            if m.get("extra", {}).get("commit") and key == "a":
                status += f" (commit {m['extra']['commit']})"
            rate = size["events"] / m["wall_seconds"] if m["wall_seconds"] else 0
            out.append(f"| {size['events']:,} | {size['file_gb']:.2f} GB | {size['generate_seconds']:.1f} s | "
                       f"({key}) {IMPLEMENTATIONS[key]} | {m['wall_seconds']:.1f} s | {rate:,.0f} | "
                       f"{m['cpu_seconds']:.1f} s | {_gib(m['peak_rss_bytes'])} | {m['load_before']:.2f} | {status} |")
    out += ["", "Ratios of wall time (targets at 10M: (a)/(b) <= 1/3, (a)/(c) <= 1.3; peak RSS of (a) <= 2 GB):", ""]
    out += ["| events | (a)/(b), target <= 0.33 | (a)/(c), target <= 1.3 | (b)/(c) | peak RSS (a), target <= 2 GB |",
            "| ---: | ---: | ---: | ---: | ---: |"]
    for size in report["sizes"]:
        runs = size["runs"]
        wall = {k: m["wall_seconds"] for k, m in runs.items() if not m.get("skipped") and m["returncode"] == 0 and not m["stopped"]}
        ratio = lambda x, y: f"{wall[x] / wall[y]:.2f}" if x in wall and y in wall else "-"  # noqa: E731
        rss = _gib(runs["a"]["peak_rss_bytes"]) if "a" in wall else "-"
        out.append(f"| {size['events']:,} | {ratio('a', 'b')} | {ratio('a', 'c')} | {ratio('b', 'c')} | {rss} |")
    out += ["", "## Same rows", "", "Sorted rows of event_table.csv and hourly_activity.csv compared as multisets "
            "(every field as text):", ""]
    out += ["| events | table | compared | rows | only left | only right | same |", "| ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for size in report["sizes"]:
        for c in size["comparisons"]:
            out.append(f"| {size['events']:,} | {c['table']} | ({c['left']}) vs ({c['right']}) | {c['left_rows']:,} / "
                       f"{c['right_rows']:,} | {c['only_left']} | {c['only_right']} | "
                       f"{'yes' if c['only_left'] == 0 and c['only_right'] == 0 and c['left_rows'] == c['right_rows'] else 'NO'} |")
            out += [f"|  |  | {e} |  |  |  |  |" for e in c.get("examples", [])]
    fixed = report.get("fixed_cost")
    if fixed:
        runs = fixed["runs"]
        n = fixed["partitions"]
        out += ["", "## Dagster's fixed cost per partition", "",
                f"`hipages-pipeline run` over {n} contiguous hours of tiny data ({runs[str(n)]['events']:,} events, "
                f"20 per hour: one ranged run of {n} partitions) against the same over 1 hour. Job time = "
                "`execute_in_process` of the ranged run (the runner's `ok in ... s`); wall = the whole command.", "",
                "| hours | events | runs | job time | wall |", "| ---: | ---: | ---: | ---: | ---: |"]
        for hours, r in runs.items():
            out.append(f"| {hours} | {r['events']:,} | {r['runs']} | {r['run']:.1f} s | {r['wall']:.1f} s |")
        out += ["", f"Per partition: **{fixed['ms_per_partition']:.0f} ms** "
                f"((job time at {n} hours - at 1 hour) / {n - 1}); per partition per asset: "
                f"**{fixed['ms_per_partition_per_asset']:.1f} ms** over the job's {len(fixed['partitioned_assets'])} "
                f"partitioned assets ({', '.join(fixed['partitioned_assets'])})."]
    profile = report.get("profile")
    if profile:
        out += ["", "## Profile of (a)", "", *_render_profile(profile)]
    out += ["", ANALYSIS_START, previous_analysis.strip() or "## Analysis\n\n(to be written)", ANALYSIS_END, ""]
    return "\n".join(out)


def _render_profile(profile: dict) -> list[str]:
    total = profile.get("total_seconds") or profile["wall_seconds"]
    timings, steps = profile.get("timings", {}), profile.get("steps", {})
    out = [f"py-spy (20 Hz, wall clock incl. waits) over `run_pipeline` on {profile['events_file']} "
           f"(in process, same code path as the CLI): {total:.1f} s in all.", "",
           "Phases of the run:", "", "| phase | seconds | share |", "| --- | ---: | ---: |"]
    whole = timings.get("phase:whole_tables", {}).get("seconds", 0.0)
    in_steps = sum(steps.values())
    for label, seconds in (("Dagster steps (sum of step wall times)", in_steps),
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


def _previous_analysis(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    if ANALYSIS_START in text and ANALYSIS_END in text:
        return text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0]
    return ""


def _previous_report(args: argparse.Namespace) -> dict:
    """The previous report of the work directory, with its sizes keyed by number of events."""
    path = args.work_dir / "report.json"
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    report["sizes"] = {size["events"]: size for size in report["sizes"]}
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write RESULTS.md; returns 1 when outputs disagree or a run failed."""
    args = _parser().parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        report = json.loads((args.work_dir / "report.json").read_text())
        profile = report.get("profile") or {}
        stacks = Path(profile.get("stacks") or args.work_dir / "profile" / "stacks.txt")
        if profile and stacks.exists() and "exclusive" not in profile:  # reports from before the table
            profile["exclusive"] = exclusive_lines(stacks, list(profile.get("steps", {})))
        args.results.write_text(render(report, _previous_analysis(args.results)))
        print(f"wrote {args.results}", file=sys.stderr)
        return 0
    report: dict = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "hours": args.hours,
                    "anomaly_rate": args.anomaly_rate, "duplicate_rate": args.duplicate_rate, "seed": args.seed,
                    "machine": _machine(), "versions": _versions(), "sizes": []}
    previous = _previous_report(args) if args.update else {}
    args.events = sorted(set(args.events))
    if previous:
        report["argv"] = f"{previous['argv']}; then {report['argv']}"
    history: dict[str, list[tuple[int, Measurement]]] = {k: [] for k in IMPLEMENTATIONS}
    failed = False
    for events in args.events:
        name = f"events_{events}"
        source, generate_seconds = _generate(args, events, args.hours, args.anomaly_rate, args.duplicate_rate, name)
        size = {"events": events, "file_gb": source.stat().st_size / 1e9, "generate_seconds": generate_seconds,
                "runs": {}, "comparisons": []}
        kept = previous.get("sizes", {}).get(events, {}).get("runs", {})
        print(f"== {events:,} events ({size['file_gb']:.2f} GB, generated in {generate_seconds:.1f} s)", file=sys.stderr)
        for key in IMPLEMENTATIONS:
            if key not in args.only:
                if key in kept:
                    size["runs"][key] = kept[key]
                    if not kept[key].get("skipped"):
                        history[key].append((events, Measurement(command=[], wall_seconds=kept[key]["wall_seconds"],
                                                                 returncode=kept[key]["returncode"],
                                                                 stopped=kept[key]["stopped"])))
                continue
            predicted = _predicted_seconds(history[key], events)
            if predicted is not None and predicted > args.max_seconds:
                size["runs"][key] = {"skipped": f"predicted {predicted / 60:.0f} min (linear from the smaller size) "
                                                f"> {args.max_seconds / 60:.0f} min cap"}
                print(f"   ({key}) skipped: {size['runs'][key]['skipped']}", file=sys.stderr)
                continue
            m = _run(args, key, source, name)
            history[key].append((events, m))
            size["runs"][key] = m.as_dict()
            failed |= not m.ok
            print(f"   ({key}) {m.wall_seconds:.1f} s, peak {_gib(m.peak_rss_bytes)}, exit {m.returncode}"
                  f"{', ' + m.stopped if m.stopped else ''}", file=sys.stderr)
        size["runs"] = {k: size["runs"][k] for k in IMPLEMENTATIONS if k in size["runs"]}
        done = [k for k, m in size["runs"].items() if not m.get("skipped") and m["returncode"] == 0 and not m["stopped"]]
        pairs = [("a", "b"), ("a", "c")] if "a" in done else [("b", "c")]
        for left, right in pairs:
            if left in done and right in done:
                comparisons = compare_outputs((left, Path(size["runs"][left]["extra"]["output"])),
                                              (right, Path(size["runs"][right]["extra"]["output"])))
                size["comparisons"] += [c.__dict__ for c in comparisons]
                failed |= not all(c.same for c in comparisons)
                print(f"   ({left}) vs ({right}): " + ", ".join(f"{c.table} {'same' if c.same else 'DIFFERENT'}"
                                                             for c in comparisons), file=sys.stderr)
        report["sizes"].append(size)
    for events, size in previous.get("sizes", {}).items():  # sizes this invocation did not run
        if events not in args.events:
            report["sizes"].append(size)
    report["sizes"].sort(key=lambda size: size["events"])
    for key in ("fixed_cost", "profile"):
        if key in previous:
            report[key] = previous[key]
    if args.partitions and "a" in args.only:
        print(f"== Dagster fixed cost: {args.partitions} partitions", file=sys.stderr)
        report["fixed_cost"] = _fixed_cost(args)
        report["fixed_cost"]["runs"] = {str(k): v for k, v in report["fixed_cost"]["runs"].items()}
    if args.profile:
        ran = [n for n, m in history["a"] if m.ok]
        if ran:
            events = max(ran)
            print(f"== profile of (a) at {events:,} events", file=sys.stderr)
            report["profile"] = _profile(args, args.work_dir / f"events_{events}.json", f"{events:,} events")
    report["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (args.work_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    args.results.write_text(render(report, _previous_analysis(args.results)))
    print(f"wrote {args.results}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
