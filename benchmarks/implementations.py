"""The three implementations, each run in its own process on the same input and measured.

(a) ``hipages-pipeline run`` end to end (every asset, asset check, quarantine, the four whole CSV
    files), with a fresh Dagster instance (a copy of dagster_home/dagster.yaml: SQLite storage);
    afterwards its per-step durations are read from that instance (:mod:`benchmarks.steps`);
(b) :mod:`benchmarks.reference`, the typical solution (json.loads, urllib.parse, pandas groupby):
    event_table.csv and hourly_activity.csv only;
(c) :mod:`benchmarks.duckdb_sql`, one DuckDB SQL script doing the pipeline's work (the lower bound).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import measure, memory_total_bytes

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
IMPLEMENTATIONS = {
    "a": "pipeline (`hipages-pipeline run`)",
    "b": "typical solution (json.loads, urllib, pandas)",
    "c": "DuckDB SQL script (lower bound)",
}


@dataclass
class Runner:
    """Runs implementations in ``work_dir``, each (implementation, input) once per invocation."""

    work_dir: Path
    max_seconds: float = 1800.0
    memory_limit: str = "1GB"
    """DuckDB's memory_limit for (c) (the pipeline's default is the same)."""
    done: dict[tuple[str, str, str], dict] = field(default_factory=dict)

    def run(self, key: str, source: Path, name: str, extra: list[str] | None = None) -> dict:
        """Run implementation ``key`` on ``source`` (a file, or a directory: its ``*.json`` files);
        the measurement as a dict (see :class:`benchmarks.harness.Measurement`) with ``extra``:
        output directory, commit, and for (a) its steps. A repeated call returns the first result."""
        if (key, str(source), str(extra)) in self.done:
            return self.done[(key, str(source), str(extra))]
        output = self.work_dir / "out" / f"{name}_{key}"
        shutil.rmtree(output, ignore_errors=True)
        home = dagster_home(self.work_dir, f"{name}_{key}")
        env = dict(os.environ, DAGSTER_HOME=str(home), PYTHONPATH=str(PROJECT))
        files = sorted(source.glob("*.json")) if source.is_dir() else [source]
        for path in files:  # the same warm page cache for every implementation
            with open(path, "rb") as handle:
                while handle.read(16 << 20):
                    pass
        log = self.work_dir / "logs" / f"{name}_{key}.log"
        print(f"   ({key}) {IMPLEMENTATIONS[key]} on {_describe(source, files)} ...", file=sys.stderr, flush=True)
        result = measure(command(key, source, output, self.memory_limit, extra), log, env=env, cwd=PROJECT,
                         timeout=self.max_seconds, memory_limit=int(0.85 * memory_total_bytes())).as_dict()
        result["extra"] |= {"output": str(output), "commit": _commit(), "log": str(log)}
        if key == "a":
            result["extra"]["steps"] = steps_of(home)
            result["extra"]["ranged_runs"] = len(re.findall(r"ok in ([0-9.]+) s", log.read_text(errors="replace")))
        ok = result["returncode"] == 0 and not result["stopped"]
        print(f"       {result['wall_seconds']:.1f} s, CPU {result['cpu_seconds']:.1f} s, peak "
              f"{result['peak_rss_bytes'] / 2**30:.2f} GiB, {'ok' if ok else result['stopped'] or 'failed'}",
              file=sys.stderr, flush=True)
        self.done[(key, str(source), str(extra))] = result
        return result


def _describe(source: Path, files: list[Path]) -> str:
    return f"{len(files)} files in {source.name}/" if source.is_dir() else source.name


def ok(result: dict | None) -> bool:
    """Whether a run (a dict from :meth:`Runner.run`) finished with status 0."""
    return bool(result) and result["returncode"] == 0 and not result["stopped"]


def command(key: str, source: Path, output: Path, memory_limit: str = "1GB", extra: list[str] | None = None) -> list[str]:
    """The command line of implementation ``key``."""
    if key == "a":
        pattern = str(source / "*.json") if source.is_dir() else str(source)
        return [sys.executable, "-m", "hipages_pipeline.cli", "run", "--source", pattern, "--output-dir", str(output),
                *(extra or [])]
    if source.is_dir():
        raise ValueError(f"({key}) reads one file, not a directory ({source})")
    if key == "b":
        return [sys.executable, "-m", "benchmarks.reference", str(source), str(output)]
    return [sys.executable, "-m", "benchmarks.duckdb_sql", str(source), str(output), "--memory-limit", memory_limit]


def dagster_home(work_dir: Path, name: str) -> Path:
    """A fresh DAGSTER_HOME with the project's dagster.yaml (SQLite storage, as a deployment has)."""
    home = work_dir / "dagster_home" / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def steps_of(home: Path) -> dict:
    """Per-step durations of the runs recorded in the instance ``home`` (:mod:`benchmarks.steps`)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.steps"], capture_output=True, text=True, cwd=PROJECT,
                          env=dict(os.environ, DAGSTER_HOME=str(home), PYTHONPATH=str(PROJECT)))
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["benchmarks.steps failed"])[-1]}
    return json.loads(done.stdout)


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=PROJECT).stdout.strip()
