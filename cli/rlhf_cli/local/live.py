"""Live progress on a TTY (rich): one bar per running stage with steps done/total, elapsed, ETA,
steps/s and its headline numbers; a finished stage collapses to one line with its result.

Everything else a stage prints is in its stage.log; Warning events print above the bars, and
a failed stage's last output lines are shown under its line.
"""

from __future__ import annotations

import atexit
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from rlhf_api.status import RLHFRunStatus, StageStatus

from ..report.summary import format_duration, format_metrics, key_metrics, stage_seconds
from .display import TAIL_LINES, EventNote, finish_lines
from .progress_text import describe, format_numbers, headline_numbers, step_of
from .summary_table import summary

MARKS = {"Succeeded": ("✓", "green"), "Failed": ("✗", "red"), "Skipped": ("-", "dim"), "Suspended": ("‖", "yellow")}


class StepRateColumn(ProgressColumn):
    """steps/s, from rich's own speed estimate (the last 30 s of updates)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.3g} steps/s" if task.speed else "", style="cyan")


class LiveDisplay:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.bars = Progress(
            TextColumn("[bold]{task.fields[stage]:<7}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            StepRateColumn(),
            TextColumn("{task.fields[numbers]}"),
            console=self.console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.phases: dict[str, str] = {}
        self.done: list[RenderableType] = []
        self.tails: dict[str, deque[str]] = {}
        self.live: Live | None = None

    def __rich__(self) -> RenderableType:
        return Group(*self.done, self.bars)

    def _start(self) -> None:
        if self.live is None:
            self.live = Live(self, console=self.console, refresh_per_second=4, redirect_stdout=False)
            self.live.start()
            atexit.register(self._stop)  # never leave the terminal without a cursor

    def _stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _print(self, renderable: RenderableType) -> None:
        """A line above the bars (or plain, before they start)."""
        self.console.print(renderable, highlight=False)

    def _task(self, stage: str, total: int | None = None, completed: int = 0) -> TaskID:
        if stage not in self.tasks:
            self._start()
            # "starting" until the first step: loading data and models can take a while
            self.tasks[stage] = self.bars.add_task(
                "", total=total, completed=completed, stage=stage, numbers="" if total else "starting"
            )
        return self.tasks[stage]

    def progress(self, stage: str, event: dict[str, Any]) -> None:
        position = step_of(event)
        if position is None:
            line = describe(event)
            if line:  # in order with the finished stages' lines, above the bars
                self._start()
                self.done.append(Text(f"  [{stage}] {line}", style="dim"))
            return
        step, total = position
        if stage not in self.tasks and self.phases.get(stage) not in (None, "Running"):
            return  # a last line from a stage already suspended or finished: its bar is gone
        task = self._task(stage, total, step)
        numbers = headline_numbers(event)
        fields: dict[str, Any] = {"numbers": format_numbers(numbers)} if numbers else {}
        self.bars.update(task, completed=step, total=total, **fields)

    def output(self, stage: str, line: str) -> None:
        if line.strip():
            self.tails.setdefault(stage, deque(maxlen=TAIL_LINES)).append(line.rstrip())

    def transition(self, status: RLHFRunStatus, events: list[EventNote]) -> None:
        for kind, reason, message in events:
            if kind == "Warning":
                self._print(Text(f"{reason}: {message}", style="yellow"))
        for entry in status.stages:
            if self.phases.get(entry.name) == entry.phase:
                continue
            seen_running = entry.name in self.tasks
            self.phases[entry.name] = entry.phase
            if entry.phase in ("Running", "Pending"):
                if entry.phase == "Running":
                    self._task(entry.name)
                continue
            self._collapse(entry, seen_running)

    def _collapse(self, entry: StageStatus, seen_running: bool) -> None:
        """The stage's bar becomes one line with its outcome (a retry gets a fresh bar)."""
        task = self.tasks.pop(entry.name, None)
        steps = ""
        if task is not None:
            state = next(t for t in self.bars.tasks if t.id == task)
            steps = f"{int(state.completed)}/{int(state.total)} steps" if state.total else ""
            self.bars.remove_task(task)
        if entry.phase == "Retrying":
            self._print(Text(f"↻ {entry.name} attempt {entry.attempts} failed: {entry.message or '?'}", style="yellow"))
            self._tail(entry.name)
            return
        mark, style = MARKS.get(entry.phase, ("·", ""))
        seconds = stage_seconds(entry)
        when = ("" if seconds is None else format_duration(seconds)) if seen_running else "earlier run"
        detail = entry.message if entry.phase == "Failed" else format_metrics(key_metrics(entry.metrics))
        outcome = "  ".join(part for part in (entry.phase.lower(), steps, when, detail or "") if part)
        self.done.append(Text.assemble((f"{mark} {entry.name:<7}", style), outcome))
        if entry.phase == "Failed":
            self._tail(entry.name)

    def _tail(self, stage: str) -> None:
        for line in self.tails.pop(stage, []):
            self.done.append(Text(f"    | {line}", style="dim"))

    def finish(self, status: RLHFRunStatus, root: Path) -> None:
        self.transition(status, [])
        if self.live is not None:
            self.live.refresh()
        self._stop()
        self.console.print()
        self.console.print(summary(status, root))
        for line in finish_lines(status, root):
            self.console.print(line, highlight=False)
