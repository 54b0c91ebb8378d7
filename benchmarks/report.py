"""RESULTS.md from a report (``<work-dir>/report.json``): targets, runs, comparisons, time per step."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from benchmarks.harness import memory_total_bytes
from benchmarks.implementations import IMPLEMENTATIONS, PROJECT
from benchmarks.pyspy import render_profile

ANALYSIS_START, ANALYSIS_END = "<!-- analysis:start -->", "<!-- analysis:end -->"
VERDICT = {True: "**met**", False: "**missed**", None: "not measured (a run failed or was not made)"}


def versions() -> dict[str, str]:
    """Versions of Python and the packages that matter here."""
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for package in ("dagster", "dagster-duckdb", "duckdb", "pandas", "pyarrow", "numpy", "publicsuffixlist", "py-spy"):
        try:
            found[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing optional package is reported as such
            found[package] = "not installed"
    return found


def machine() -> dict[str, str]:
    """Cores, CPU model, memory, OS and the code's commit (with uncommitted changes named)."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    except OSError:
        pass
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=PROJECT).stdout  # noqa: E731
    changed = sorted({line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()})
    return {"cores": str(os.cpu_count()), "memory": f"{memory_total_bytes() / 2**30:.1f} GiB", "cpu": model,
            "os": platform.platform(), "commit": git("rev-parse", "--short", "HEAD").strip()
            + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _input(run: dict) -> str:
    files = "1 file" if run["files"] == 1 else f"{run['files']:,} files"
    return f"{run['events']:,} events, {files} ({run['bytes'] / 1e9:.2f} GB)"


def _status(run: dict) -> str:
    if run["returncode"] == 0 and not run["stopped"]:
        return "ok"
    return run["stopped"] or f"exit {run['returncode']} (log: {run['extra'].get('log', '')})"


def _header(report: dict) -> list[str]:
    m, data = report["machine"], report["data"]
    return [
        "# Benchmark results", "",
        f"Written by `make bench` / `python -m benchmarks` on {report['finished']} "
        f"({report['total_seconds'] / 60:.0f} min in all), from `python -m benchmarks {report['argv']}`.",
        "Regenerate with `make bench`; the analysis section at the end is kept between runs.", "",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, {m['os']}",
        f"- Code: commit {m['commit']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- Data: `hipages-pipeline generate` over {data['hours']} hours from 2017-02-02T00:00, anomaly rate "
        f"{data['anomaly_rate']}, duplicate rate {data['duplicate_rate']}, seed {data['seed']}; split files hold "
        "the same lines. The input is read once before each run (warm page cache for all).",
        "- Implementations: " + "; ".join(f"({k}) {v}" for k, v in IMPLEMENTATIONS.items())
        + f". (c) runs with DuckDB memory_limit {report['memory_limit']}.",
        "- Each run is its own process; peak RSS is that of its whole process tree (kernel high-water mark and "
        "/proc sampling every 0.2 s). CPU = user + system seconds. Load = 1-minute load average when the run "
        "started (2 cores: above ~0.5 means another process competed for the CPU).",
    ]


def _targets(report: dict) -> list[str]:
    out = ["", "## Targets", "", "| scenario | target | measured | verdict |", "| --- | --- | ---: | --- |"]
    for s in report["scenarios"]:
        out += [f"| {s['id']} | {t['what']} {t['target']} | {t['measured']} | {VERDICT[t['met']]} |"
                for t in s["targets"]]
        same = [c["same"] for c in s["comparisons"]]
        if same:
            out.append(f"| {s['id']} | the same rows in the CSV files | {sum(same)} of {len(same)} tables | "
                       f"{VERDICT[all(same)]} |")
    return out


def _runs(report: dict) -> list[str]:
    out = ["", "## Runs", ""]
    for s in report["scenarios"]:
        out += [f"### {s['id']}: {s['title']}", "", *(f"- {note}" for note in s["notes"]), "",
                "| input | implementation | wall | events/s | CPU | peak RSS | load | status |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in s["runs"]:
            rate = f"{r['events'] / r['wall_seconds']:,.0f}" if r["wall_seconds"] else "-"
            out.append(f"| {_input(r)} | ({r['implementation']}) {IMPLEMENTATIONS[r['implementation']]} | "
                       f"{r['wall_seconds']:.1f} s | {rate} | {r['cpu_seconds']:.1f} s | {_gib(r['peak_rss_bytes'])} | "
                       f"{r['load_before']:.2f} | {_status(r)} |")
        out += ["", *(f"- Target: {t['what']} {t['target']}: {t['measured']}, {VERDICT[t['met']]}." for t in s["targets"]), ""]
    return out


def _comparisons(report: dict) -> list[str]:
    out = ["## Same rows", "", "Whole CSV files compared as multisets of rows, every field as text. rejected_events: "
           "without `message` (worded by each) and `rejected_at`; without `source_file`, `line_number` when one side "
           "read the lines split into several files; and its rows counted per reason.", "",
           "| scenario | table | compared | columns | rows | only left | only right | same |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | --- |"]
    reasons: dict[str, dict[str, list[int]]] = {}
    for s in report["scenarios"]:
        for c in s["comparisons"]:
            out.append(f"| {s['id']} | {c['table']} | {c['left']} vs {c['right']} | {c['columns']} | "
                       f"{c['left_rows']:,} / {c['right_rows']:,} | {c['only_left']} | {c['only_right']} | "
                       f"{'yes' if c['same'] else '**NO**'} |")
            out += [f"|  |  | {e.replace('|', '¦')} |  |  |  |  |  |" for e in c.get("examples", [])]
            for reason, counts in c.get("reasons", {}).items():
                reasons.setdefault(reason, {})[f"{s['id']}: {c['left']} vs {c['right']}"] = counts
    if reasons:
        pairs = list(dict.fromkeys(pair for by_pair in reasons.values() for pair in by_pair))
        out += ["", "Rejected lines per reason (left / right):", "", "| reason | " + " | ".join(pairs) + " |",
                "| --- |" + " ---: |" * len(pairs)]
        for reason, by_pair in sorted(reasons.items()):
            cells = [by_pair.get(pair) for pair in pairs]
            out.append(f"| {reason} | " + " | ".join("-" if n is None else f"{n[0]:,} / {n[1]:,}"
                                                     + ("" if n[0] == n[1] else " **NO**") for n in cells) + " |")
    return out


def _steps(report: dict) -> list[str]:
    """Per-step seconds of every (a) run, one column per run."""
    columns, seen = [], set()
    for s in report["scenarios"]:
        for r in s["runs"]:
            if r["implementation"] == "a" and r["extra"]["output"] not in seen and "steps" in r["extra"].get("steps", {}):
                seen.add(r["extra"]["output"])
                columns.append((f"{r['events']:,} events, {r['files']:,} file(s)", r))
    if not columns:
        return []
    names = list(dict.fromkeys(step for _, r in columns for step in r["extra"]["steps"]["steps"]))
    out = ["", "## Where (a)'s time goes, per step", "",
           "Wall seconds of each Dagster step (asset or multi-asset), STEP_START to STEP_SUCCESS in the run's own "
           "instance (a fresh DAGSTER_HOME per run), summed over the runs of one `hipages-pipeline run` (`(n x)`: "
           "the step ran n times). Outside the runs = the command's wall time - the runs' (process start, imports, "
           "planning, summary).", "", "| step | " + " | ".join(label for label, _ in columns) + " |",
           "| --- |" + " ---: |" * len(columns)]
    for name in names:
        cells = []
        for _, r in columns:
            step = r["extra"]["steps"]["steps"].get(name)
            cells.append("-" if step is None else f"{step['seconds']:.1f}" + (f" ({step['count']} x)" if step["count"] > 1 else ""))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [r["extra"]["steps"] for _, r in columns]
    out.append("| **all steps** | " + " | ".join(f"{sum(s['seconds'] for s in t['steps'].values()):.1f}" for t in totals) + " |")
    out.append("| Dagster runs (count: wall) | " + " | ".join(f"{t['runs']}: {t['run_seconds']:.1f}" for t in totals) + " |")
    out.append("| outside the runs | " + " | ".join(f"{r['wall_seconds'] - r['extra']['steps']['run_seconds']:.1f}"
                                                  for _, r in columns) + " |")
    out.append("| command wall time | " + " | ".join(f"{r['wall_seconds']:.1f}" for _, r in columns) + " |")
    return out


def _fixed(fixed: dict) -> list[str]:
    n, runs = fixed["partitions"], fixed["runs"]
    out = ["", "## Dagster's fixed cost per partition", "",
           f"`hipages-pipeline run` over {n} contiguous hours of tiny data ({runs[str(n)]['events']:,} events, 20 per "
           f"hour: one ranged run of {n} partitions) against the same over 1 hour. Job time = the ranged run "
           "(the runner's `ok in ... s`); wall = the whole command.", "",
           "| hours | events | runs | job time | wall |", "| ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {hours} | {r['events']:,} | {r['runs']} | {r['run']:.1f} s | {r['wall']:.1f} s |" for hours, r in runs.items()]
    out += ["", f"Per partition: **{fixed['ms_per_partition']:.0f} ms** ((job time at {n} hours - at 1 hour) / {n - 1}); "
            f"per partition per step: **{fixed['ms_per_partition_per_step']:.1f} ms** over the ranged run's "
            f"{len(fixed['steps'])} steps ({', '.join(fixed['steps'])})."]
    return out


def render(report: dict, previous_analysis: str) -> str:
    """RESULTS.md from the report (and the kept analysis section)."""
    out = _header(report) + _targets(report) + _runs(report) + _comparisons(report) + _steps(report)
    if report.get("fixed_cost"):
        out += _fixed(report["fixed_cost"])
    if report.get("profile"):
        out += ["", "## Profile of (a)", "", *render_profile(report["profile"])]
    out += ["", ANALYSIS_START, previous_analysis.strip() or "## Analysis\n\n(to be written)", ANALYSIS_END, ""]
    return "\n".join(out)


def previous_analysis(path: Path) -> str:
    """The hand-written section between the analysis markers of an existing RESULTS.md."""
    if not path.exists():
        return ""
    text = path.read_text()
    if ANALYSIS_START in text and ANALYSIS_END in text:
        return text.split(ANALYSIS_START, 1)[1].split(ANALYSIS_END, 1)[0]
    return ""
