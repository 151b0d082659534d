"""Live progress on a TTY (rich): one bar per running stage with steps done/total, elapsed, ETA,
steps/s and its headline numbers; a finished stage collapses to one line with its result.

Everything else a stage prints is in its stage.log; Warning events print above the bars, and
a failed stage's last output lines are shown under its line.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from rlhf_api.status import RLHFRunStatus, StageStatus

from ..report.summary import format_duration, format_metrics, key_metrics, stage_seconds
from ..stage_bars import StageBars
from .display import TAIL_LINES, EventNote, finish_lines
from .progress_text import describe, format_numbers, headline_numbers, step_of
from .summary_table import summary


class LiveDisplay:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.bars = StageBars(self.console)
        self.phases: dict[str, str] = {}
        self.tails: dict[str, deque[str]] = {}

    def progress(self, stage: str, event: dict[str, Any]) -> None:
        position = step_of(event)
        if position is None:
            line = describe(event)
            if line:  # in order with the finished stages' lines, above the bars
                self.bars.note(Text(f"  [{stage}] {line}", style="dim"))
            return
        step, total = position
        if not self.bars.has(stage) and self.phases.get(stage) not in (None, "Running"):
            return  # a last line from a stage already suspended or finished: its bar is gone
        self.bars.step(stage, step, total, format_numbers(headline_numbers(event)))

    def output(self, stage: str, line: str) -> None:
        if line.strip():
            self.tails.setdefault(stage, deque(maxlen=TAIL_LINES)).append(line.rstrip())

    def transition(self, status: RLHFRunStatus, events: list[EventNote]) -> None:
        for kind, reason, message in events:
            if kind == "Warning":
                self.bars.print(Text(f"{reason}: {message}", style="yellow"))
        for entry in status.stages:
            if self.phases.get(entry.name) == entry.phase:
                continue
            seen_running = self.bars.has(entry.name)
            self.phases[entry.name] = entry.phase
            if entry.phase in ("Running", "Pending"):
                if entry.phase == "Running":
                    self.bars.waiting(entry.name, "starting")  # until the first step: loading
                continue
            self._collapse(entry, seen_running)

    def _collapse(self, entry: StageStatus, seen_running: bool) -> None:
        """The stage's bar becomes one line with its outcome (a retry gets a fresh bar)."""
        if entry.phase == "Retrying":
            self.bars.remove(entry.name)
            self.bars.print(
                Text(f"↻ {entry.name} attempt {entry.attempts} failed: {entry.message or '?'}", style="yellow")
            )
            self._tail(entry.name)
            return
        seconds = stage_seconds(entry)
        when = ("" if seconds is None else format_duration(seconds)) if seen_running else "earlier run"
        detail = entry.message if entry.phase == "Failed" else format_metrics(key_metrics(entry.name, entry.metrics))
        self.bars.collapse(entry.name, entry.phase, [when, detail or ""])
        if entry.phase == "Failed":
            self._tail(entry.name)

    def _tail(self, stage: str) -> None:
        for line in self.tails.pop(stage, []):
            self.bars.note(Text(f"    | {line}", style="dim"))

    def finish(self, status: RLHFRunStatus, root: Path) -> None:
        self.transition(status, [])
        self.bars.stop()
        self.console.print()
        self.console.print(summary(status, root))
        for line in finish_lines(status, root):
            self.console.print(line, highlight=False)
