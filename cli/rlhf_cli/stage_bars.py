"""Stage progress bars on a terminal (rich), one renderer for `rlhf run`'s live display,
`rlhf status -w` and `rlhf logs -f`: a bar per running stage with steps done/total, elapsed,
ETA, steps/s and its headline numbers; above the bars, lines in order (a finished stage
collapsed to one line, notes).

A bar's timing is rich's own estimate over its updates when they are the stage's progress
events as they happen (`step`), or numbers measured elsewhere (`report`: the RLHFRun status
carries the operator's rate, estimated finish time and the stage's start), ticking with the
wall clock between updates.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable
from dataclasses import dataclass
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

MARKS = {"Succeeded": ("✓", "green"), "Failed": ("✗", "red"), "Skipped": ("-", "dim"), "Suspended": ("‖", "yellow")}


@dataclass(frozen=True)
class Reported:
    """A bar's timing measured elsewhere: wall-clock epochs and a rate; None where unknown."""

    started_at: float | None = None
    finish_at: float | None = None
    rate: float | None = None


def _reported(task: Task) -> Reported | None:
    value = task.fields.get("reported")
    return value if isinstance(value, Reported) else None


def _clock(seconds: float, style: str) -> Text:
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return Text(f"{hours:d}:{minutes:02d}:{secs:02d}", style=style)


class ElapsedColumn(TimeElapsedColumn):
    def __init__(self, wall: Callable[[], float]) -> None:
        super().__init__()
        self.wall = wall

    def render(self, task: Task) -> Text:
        reported = _reported(task)
        if reported is None:
            return super().render(task)
        if reported.started_at is None:
            return Text("-:--:--", style="progress.elapsed")
        return _clock(self.wall() - reported.started_at, "progress.elapsed")


class RemainingColumn(TimeRemainingColumn):
    def __init__(self, wall: Callable[[], float]) -> None:
        super().__init__()
        self.wall = wall

    def render(self, task: Task) -> Text:
        reported = _reported(task)
        if reported is None:
            return super().render(task)
        if reported.finish_at is None:
            return Text("-:--:--", style="progress.remaining")
        return _clock(reported.finish_at - self.wall(), "progress.remaining")


class StepRateColumn(ProgressColumn):
    """steps/s: the reported rate, else rich's own estimate over recent updates."""

    def render(self, task: Task) -> Text:
        reported = _reported(task)
        rate = reported.rate if reported is not None else task.speed
        return Text(f"{rate:.3g} steps/s" if rate else "", style="cyan")


def outcome_line(name: str, phase: str, parts: list[str]) -> Text:
    """A finished stage in one line: mark, name, then the non-empty parts."""
    mark, style = MARKS.get(phase, ("·", ""))
    return Text.assemble((f"{mark} {name:<7}", style), "  ".join(p for p in parts if p))


class StageBars:
    """The bars and the lines above them, redrawn in place (rich Live) once anything is shown."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        get_time: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<7}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("steps"),
            ElapsedColumn(wall),
            TextColumn("ETA"),
            RemainingColumn(wall),
            StepRateColumn(),
            TextColumn("{task.fields[numbers]}"),
            console=self.console,
            get_time=get_time,
            # rate and ETA over the last 5 minutes of updates: a slow stage (a PPO step can take
            # a minute) still gets both, where rich's default 30 s would hold one update at most
            speed_estimate_period=300,
        )
        self.tasks: dict[str, TaskID] = {}
        self.lines: list[RenderableType] = []
        self.live: Live | None = None

    def __rich__(self) -> RenderableType:
        return Group(*self.lines, self.progress)

    def start(self) -> None:
        if self.live is None:
            self.live = Live(self, console=self.console, refresh_per_second=4, redirect_stdout=False)
            self.live.start()
            atexit.register(self.stop)  # never leave the terminal without a cursor

    def stop(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None

    def print(self, renderable: RenderableType) -> None:
        """A line printed above the display (or plain, before it starts)."""
        self.console.print(renderable, highlight=False)

    def note(self, renderable: RenderableType) -> None:
        """A line kept above the bars, in order with the collapsed stages."""
        self.start()
        self.lines.append(renderable)

    def has(self, stage: str) -> bool:
        return stage in self.tasks

    def _task(self, stage: str) -> TaskID:
        if stage not in self.tasks:
            self.start()
            self.tasks[stage] = self.progress.add_task("", total=None, stage=stage, numbers="", waiting=False)
        return self.tasks[stage]

    def _state(self, task: TaskID) -> Task:
        return next(t for t in self.progress.tasks if t.id == task)

    def waiting(self, stage: str, text: str) -> None:
        """A bar with no steps yet, saying why: "starting" (loading data and models), "queued ..."."""
        known = stage in self.tasks
        task = self._task(stage)
        state = self._state(task)
        if not known or state.fields.get("waiting") or not state.completed:
            self.progress.update(task, numbers=text, waiting=True)

    def step(self, stage: str, step: int, total: int | None, numbers: str | None = None) -> None:
        """A progress event as it happens: rich estimates rate and ETA from these updates."""
        task = self._task(stage)
        waiting = self._state(task).fields.get("waiting")
        fields: dict[str, Any] = {"numbers": numbers} if numbers else {"numbers": ""} if waiting else {}
        self.progress.update(task, completed=step, total=total, waiting=False, **fields)

    def report(self, stage: str, step: int, total: int | None, numbers: str, timing: Reported) -> None:
        """Progress measured elsewhere (the run's status), with its own timing."""
        task = self._task(stage)
        self.progress.update(task, completed=step, total=total, numbers=numbers, waiting=False, reported=timing)

    def remove(self, stage: str) -> str:
        """Drop a stage's bar; its "done/total steps" text ("" when it had no total)."""
        task = self.tasks.pop(stage, None)
        if task is None:
            return ""
        state = self._state(task)
        steps = f"{int(state.completed)}/{int(state.total)} steps" if state.total else ""
        self.progress.remove_task(task)
        return steps

    def collapse(self, stage: str, phase: str, parts: list[str]) -> None:
        """The stage's bar becomes one line: mark, name, outcome, its steps, then `parts`."""
        steps = self.remove(stage)
        self.note(outcome_line(stage, phase, [phase.lower(), steps, *parts]))
