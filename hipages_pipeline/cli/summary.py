"""What a ``hipages-pipeline run`` did, as the summary it prints: lines, events, checks, files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hipages_pipeline.defs.partitions import hour_of


def hours_label(first: datetime, last: datetime) -> str:
    """A run's hours as the summary names them: ``2017-02-02 20:00`` or ``first..last``."""
    return f"{first:%Y-%m-%d %H:00}" if first == last else f"{first:%Y-%m-%d %H:00}..{last:%Y-%m-%d %H:00}"


@dataclass
class CheckTally:
    """Asset check outcomes across all runs: name -> [passed, failed], plus failure texts, each
    naming the hours of the run it came from (``WARN asset.check (2017-02-02 20:00): ...``)."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(counts[0] for counts in self.counts.values())

    def failed(self, severity: str) -> int:
        """How many evaluations failed with this severity (``WARN`` or ``ERROR``)."""
        return sum(1 for failure in self.failures if failure.startswith(severity))

    def add(self, evaluation, hours: str | None = None) -> None:
        """Count one evaluation; it names its own hour when it has one (checks of hourly assets
        report per hour), else ``hours``, its run's partition range (None: unpartitioned)."""
        name = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
        self.counts.setdefault(name, [0, 0])[0 if evaluation.passed else 1] += 1
        if not evaluation.passed:
            partition = getattr(evaluation, "partition", None)
            if partition and "evaluated_over" not in evaluation.metadata:
                hours = hours_label(hour_of(partition), hour_of(partition))
            elif partition:  # one verdict over the run's range, reported on each hour: one line for all
                hours = f"{hours}, judged over the range"
            where = f" ({hours})" if hours else ""
            self.failures.append(f"{evaluation.severity.value} {name}{where}: {evaluation.description or ''}".rstrip(": "))


@dataclass
class RunSummary:
    """What a whole run did; ``ok`` is False when a run failed or the accounting does not hold."""

    hours: list[datetime] = field(default_factory=list)
    files: tuple[int, int] = (0, 0)
    """Source files (landed now, unchanged since they were landed)."""
    lines_read: int = 0
    accepted: int = 0
    failed_runs: list[str] = field(default_factory=list)
    duplicates: int = 0
    rejected: int = 0
    checks: CheckTally = field(default_factory=CheckTally)
    runs: int = 0
    outputs: dict[str, tuple[Path, int]] = field(default_factory=dict)
    seconds: float = 0.0
    source_changed: list[str] = field(default_factory=list)
    """Source files added, removed or changed (size, mtime) between the start and the end."""
    land_only: bool = False
    """Only the landing ran (``hipages-pipeline land``): ``hours`` are the hours still to build."""
    fault: str | None = None
    """``"<path>: <cause>"`` of the first run that failed on an OS error (full disk, permissions)."""

    @property
    def accounted(self) -> bool:
        return self.lines_read == self.accepted + self.duplicates + self.rejected

    @property
    def ok(self) -> bool:
        if self.land_only:
            return not self.failed_runs
        return not self.failed_runs and self.accounted and not self.all_quarantined

    @property
    def all_quarantined(self) -> bool:
        """Lines were read and every one was quarantined: the source is not what we expect.

        A line that duplicates an event already held (in this or another file) is not quarantined: a
        source made only of such lines adds nothing and is not an error."""
        return self.lines_read > 0 and self.rejected == self.lines_read

    @property
    def changed_text(self) -> str:
        return (f"the source changed during the run: {', '.join(self.source_changed)}; "
                "re-run to include the new lines")

    def render(self) -> str:
        """The human-readable summary printed at the end of ``hipages-pipeline run`` (or ``land``)."""
        if self.land_only:
            return self._render_landing()
        if self.failed_runs:
            mark = f"incomplete: {len(self.failed_runs)} run(s) failed, their hours are not all stored"
        elif self.accounted:
            mark = "ok"
        elif self.source_changed:
            mark = "does not hold: " + self.changed_text
        else:
            mark = "MISMATCH: lines were lost or counted twice"
        lines = [
            "",
            "Summary",
            f"  source files      {sum(self.files)}: {self.files[0]} landed now, {self.files[1]} unchanged",
            f"  lines read        {self.lines_read} (when landed)",
            f"  events accepted   {self.accepted}",
            f"  duplicates        {self.duplicates}",
            f"  rejected          {self.rejected}",
            f"  accounting        {self.lines_read} = {self.accepted} + {self.duplicates} + {self.rejected} ({mark})",
            f"  hours             {len(self.hours)} in {self.runs} run(s), {self.seconds:.1f} s",
            f"  asset checks      {self.checks.passed + len(self.checks.failures)} evaluations: "
            f"{self.checks.passed} passed, {self.checks.failed('WARN')} WARN, {self.checks.failed('ERROR')} ERROR",
        ]
        lines += [f"    - {failure}" for failure in dict.fromkeys(self.checks.failures)]
        lines += [f"  {name:<17} {path} ({rows} row{'' if rows == 1 else 's'})" for name, (path, rows) in self.outputs.items()]
        if not self.runs:
            lines.append("  outputs           unchanged: nothing new to land, every hour up to date")
        lines += [f"  FAILED run        {reason}" for reason in self.failed_runs]
        if self.source_changed and (self.accounted or self.failed_runs):
            lines.append(f"  SOURCE CHANGED    {self.changed_text}")
        if self.all_quarantined:
            lines.append("  NO EVENT ACCEPTED every line was quarantined: see rejected_events.csv for the reasons")
        return "\n".join(lines)

    def _render_landing(self) -> str:
        hours = (f"{len(self.hours)} ({hours_label(self.hours[0], self.hours[-1])})" if self.hours else "none")
        return "\n".join([
            "", "Landing",
            f"  source files      {sum(self.files)}: {self.files[0]} landed now, {self.files[1]} unchanged",
            f"  lines             {self.lines_read} (events and quarantined lines: landed_files)",
            f"  hours to build    {hours}",
            "  next              hipages-pipeline run (or hipages_etl_job for those hours: make job HOUR=...)",
            f"  time              {self.seconds:.1f} s",
        ])
