"""Why a run failed, on one line: its failed steps' errors, an OS error's path and cause, an interrupt.

Shared by the in-process runs (:mod:`hipages_pipeline.cli.runner`) and the queued ones
(:mod:`hipages_pipeline.cli.queue`): both hand over an object with ``success``,
``get_step_failure_events()`` and ``get_run_failure_event()`` (a run's result, or its event log).
"""

from __future__ import annotations

import re
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance

OS_CAUSES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied",
             "No such file or directory", "Not a directory", "Is a directory", "File exists",
             "Too many open files", "Input/output error", "disk I/O error", "database or disk is full")
"""The OS errors' texts (``os.strerror``, SQLite's and DuckDB's wording) that make a failure an
operator's problem: a path and a cause, not a bug."""

_QUOTED_PATH = re.compile(r"""['"](/[^'"]+)['"]""")


def os_fault(text: str, default_path: Path | str | None = None) -> str | None:
    """``"<path>: <cause>"`` when ``text`` (an error message) reports an OS error, else None; the
    path is the first quoted absolute path of the message, else ``default_path``."""
    cause = next((cause for cause in OS_CAUSES if cause.lower() in text.lower()), None)
    if cause is None:
        return None
    path = _QUOTED_PATH.search(text)
    where = path.group(1) if path else default_path
    return f"{where}: {cause}" if where else cause


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _errors(result):
    """The errors of a run's failed steps (the root cause's when wrapped), and of the run itself."""
    events = list(result.get_step_failure_events())
    run_failure = result.get_run_failure_event() if not result.success else None
    for event in [*events, *([run_failure] if run_failure else [])]:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None and "DagsterExecution" in (error.cls_name or ""):
            error = error.cause
        yield event.step_key, error


def failure_reason(result) -> str:
    """The failed steps and their errors' messages, on one line."""
    messages = [f"{step}: {one_line(error.message) if error else 'failed'}"
                for step, error in _errors(result) if step]
    return "; ".join(messages) or "the run failed"


def interrupted(result) -> bool:
    """Whether the run stopped because the process was interrupted (Ctrl-C, SIGTERM)."""
    for _, error in _errors(result):
        while error is not None:
            if error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
            error = error.cause
    return False


class RunLog:
    """A run's failure events from the instance's event log, shaped as ``failure_reason`` reads them."""

    def __init__(self, instance: DagsterInstance, run_id: str) -> None:
        types = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE, DagsterEventType.ENGINE_EVENT}
        self.events = [record.event_log_entry.dagster_event
                       for record in instance.get_records_for_run(run_id, of_type=types).records]
        self.success = False

    def get_step_failure_events(self):
        return [event for event in self.events if event.event_type == DagsterEventType.STEP_FAILURE]

    def get_run_failure_event(self):
        return next((event for event in self.events if event.event_type == DagsterEventType.RUN_FAILURE), None)

    def reason(self) -> str:
        """The failed steps' errors, else the run failure's message, after the code server's
        explanation of a crashed worker (``... unexpectedly exited with exit code -9``) if any."""
        reason = failure_reason(self)
        failure = self.get_run_failure_event()
        if reason != "the run failed" or failure is None:
            return reason
        crash = [event.message for event in self.events
                 if event.event_type == DagsterEventType.ENGINE_EVENT and "process for" in (event.message or "")]
        return one_line("; ".join([*crash[-1:], failure.message or reason]))
