"""The command line under faults: OS errors (full disk, a path that cannot be written), settings
under the wrong name, a source that grows during the run, and WARN/ERROR lines naming their hour."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from pathlib import Path

import duckdb
from dagster import JobDefinition

from hipages_pipeline.cli import main
from hipages_pipeline.cli.runner import run_pipeline
from hipages_pipeline.defs.resources import EventSource
from hipages_pipeline_tests.conftest import PROJECT_ROOT, SAMPLE


def _events(path: Path, hours: list[str], per_hour: int = 3, first_id: int = 0) -> Path:
    """``per_hour`` valid events in each hour ``dd/mm/yyyy HH`` (the sample's timestamp form)."""
    lines = [json.dumps({"event_id": str(first_id + i * per_hour + j),
                         "user": {"session_id": "1", "id": 7, "ip": "10.0.0.1"}, "action": "page_view",
                         "url": "https://www.hipages.com.au/articles", "timestamp": f"{hour}:22:{j:02d}"})
             for i, hour in enumerate(hours) for j in range(per_hour)]
    with open(path, "a") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


def _no_traceback(printed) -> None:
    assert "Traceback" not in printed.out + printed.err and "Stack Trace" not in printed.out + printed.err


# 1. OS errors: one line naming the path and the cause, the run's reason, status 1, nothing corrupt.

def test_full_disk_while_writing_the_whole_tables(tmp_path, capsys, monkeypatch):
    from hipages_pipeline.defs.exports import whole_tables

    def full_disk(parts, path, columns):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(whole_tables, "concatenate_csv_files", full_disk)
        assert main(["run", "--source", str(SAMPLE), "--output-dir", str(out)]) == 1
    printed = capsys.readouterr()
    _no_traceback(printed)
    failures = [line for line in printed.err.splitlines() if line.startswith("hipages-pipeline:")]
    assert len(failures) == 1, printed.err
    assert failures[0].startswith(f"hipages-pipeline: {out / 'event_table.csv'}: No space left on device")
    assert "whole_event_table_csv: OSError" in failures[0]  # the run's own failure reason
    assert not list(out.glob(".*.tmp"))
    # nothing is left corrupt: the next run, with room on the disk, succeeds
    assert main(["run", "--source", str(SAMPLE), "--output-dir", str(out)]) == 0
    assert "500 = 500 + 0 + 0 (ok)" in capsys.readouterr().out


def test_full_disk_escaping_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    """A fault outside any step (DuckDB's commit, the instance's storage) raises out of the run."""
    original = JobDefinition.execute_in_process
    wal = tmp_path / "out" / "hipages.duckdb.wal"

    def execute(self, *args, asset_selection=None, **kwargs):
        if asset_selection and asset_selection[0].to_user_string() == "whole_event_table_csv":
            raise duckdb.TransactionException(
                f'TransactionContext Error: Failed to commit: could not write file "{wal}": No space left on device')
        return original(self, *args, asset_selection=asset_selection, **kwargs)

    monkeypatch.setattr(JobDefinition, "execute_in_process", execute)
    source = _events(tmp_path / "events.json", ["02/02/2017 20"])
    assert main(["run", "--source", str(source), "--output-dir", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr()
    _no_traceback(printed)
    failures = [line for line in printed.err.splitlines() if line.startswith("hipages-pipeline:")]
    assert len(failures) == 1, printed.err
    assert failures[0].startswith(f"hipages-pipeline: {wal}: No space left on device")
    assert "TransactionException" in failures[0]


def test_unwritable_output_subdirectory(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "event_table").write_text("a file where the hour files' directory should be")
    source = _events(tmp_path / "events.json", ["02/02/2017 20"])
    assert main(["run", "--source", str(source), "--output-dir", str(out)]) == 1
    printed = capsys.readouterr()
    _no_traceback(printed)
    failures = [line for line in printed.err.splitlines() if line.startswith("hipages-pipeline:")]
    assert len(failures) == 1, printed.err
    assert failures[0].startswith(f"hipages-pipeline: {out / 'event_table'}"), failures[0]
    assert "failed before: 2017-02-02 20:00: event_table_csv: FileExistsError" in failures[0]  # the run's reason


# 3. A source that grows during the run.

def test_source_growing_during_the_run_is_named_and_landed_by_the_next_run(tmp_path):
    """3 events at 20:22 and 3 at 22:22 are landed; 2 more at 22:22 are appended while the hours
    run. The hours read the landed lines only, so the run accounts for its 6 lines (ok) and names
    the changed file; the next run lands the grown file again (8 lines) and rebuilds its hours."""
    source = _events(tmp_path / "events.json", ["02/02/2017 20", "02/02/2017 22"])

    def progress(message: str) -> None:
        if message.startswith("[1/2]"):  # after the landing, before the second hour is built
            _events(source, ["02/02/2017 22"], per_hour=2, first_id=100)

    out = str(tmp_path / "out")
    summary = run_pipeline(EventSource(source_glob=str(source)), out, progress=progress)
    rendered = summary.render()
    assert (summary.lines_read, summary.accepted, summary.duplicates, summary.rejected) == (6, 6, 0, 0)
    assert summary.ok and summary.source_changed == [str(source)]
    assert "MISMATCH" not in rendered
    assert f"the source changed during the run: {source}; re-run to include the new lines" in rendered

    again = run_pipeline(EventSource(source_glob=str(source)), out, progress=lambda message: None)
    assert again.files == (1, 0)
    assert [f"{hour:%H}" for hour in again.hours] == ["20", "22"]  # the file's hours, before and after
    assert (again.lines_read, again.accepted, again.duplicates, again.rejected) == (8, 8, 0, 0)
    assert again.ok and again.source_changed == []


# 4. WARN and ERROR lines name their hour.

def test_warn_lines_name_their_hour(sample_cli_run):
    """What the session's `hipages-pipeline run` of the sample printed (conftest.sample_cli_run)."""
    assert sample_cli_run.status == 0
    printed = sample_cli_run.stdout
    warns = [line for line in printed.splitlines() if line.strip().startswith("- WARN cleaned_events.url_level1_expected")]
    assert warns, printed
    assert all(re.search(r"\(2017-\d\d-\d\d 20:00\)", line) for line in warns), warns
    unpartitioned = [line for line in printed.splitlines() if "rejected_without_hour." in line]
    assert all("2017-" not in line for line in unpartitioned), unpartitioned


# 2. One name per setting: make variables.

def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "-n", *args],
                          capture_output=True, text=True, timeout=60)


def test_make_run_takes_the_settings_by_their_names():
    done = _make("run", "SOURCE=/tmp/in/*.json", "OUTPUT_DIR=/tmp/x", "TIMEZONE=Australia/Sydney")
    assert done.returncode == 0, done.stderr
    assert "--source '/tmp/in/*.json' --output-dir '/tmp/x' --timezone 'Australia/Sydney'" in done.stdout


def test_make_rejects_an_unknown_variable_in_one_line():
    done = _make("run", "OUTPUT=/tmp/x")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "unknown variable OUTPUT" in done.stderr and "OUTPUT_DIR" in done.stderr
    assert "hipages-pipeline run" not in done.stdout
    assert _make("-j2", "help").returncode == 0  # make's own options are not variables


def test_make_job_checks_the_hour():
    for hour in ("2017-02-02-20:30", "2017-02-02T20:00", "2017-02-30-20:00", "tomorrow"):
        done = _make("job", f"HOUR={hour}")
        assert done.returncode == 2, (hour, done.stdout)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"HOUR={hour}" in done.stderr and "YYYY-MM-DD-HH:00" in done.stderr
    done = _make("job")
    assert done.returncode == 0 and '"dagster/asset_partition_range_start": "2017-02-02-20:00"' in done.stdout
    done = _make("job", "HOUR=2017-01-01-20:00", "OUTPUT_DIR=/tmp/x")
    assert done.returncode == 0 and '"dagster/asset_partition_range_end": "2017-01-01-20:00"' in done.stdout
    assert "HIPAGES_OUTPUT_DIR" in done.stdout or "/tmp/x" in done.stdout
