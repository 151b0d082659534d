"""Plain progress lines for logs (no TTY: CI, `kubectl logs`, a file): few of them.

A stage prints its first step, then one line per 10% of its steps, and at most one more every
`every_seconds` when steps are slow; each line has the stage's headline numbers, elapsed time,
ETA and steps/s. Other events (resume, comparison) get one line each; a failed stage's last
output lines are shown, since they usually say why.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rlhf_api.status import RLHFRunStatus

from ..report.summary import format_duration, format_metrics, key_metrics
from .events import describe, format_numbers, headline_numbers, step_of
from .summary_table import summary

TAIL_LINES = 8


@dataclass
class _Stage:
    decile: int = -1  # the last tenth of the steps printed
    printed_at: float | None = None
    first: tuple[float, int] | None = None  # (time, step) of the first step seen in this attempt
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    phase: str | None = None


def eta_text(first: tuple[float, int] | None, now: float, step: int, total: int | None) -> str:
    """'25s, ETA 17s, 14.4 steps/s' from the rate since the attempt's first step seen."""
    if first is None:
        return ""
    elapsed = now - first[0]
    parts = [format_duration(elapsed)]
    done = step - first[1]
    if done > 0 and elapsed > 0:
        rate = done / elapsed
        if total:
            parts.append(f"ETA {format_duration(max(0, total - step) / rate)}")
        parts.append(f"{rate:.3g} steps/s")
    return ", ".join(parts)


class PlainDisplay:
    def __init__(self, out: TextIO, every_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.every_seconds = every_seconds
        self.clock = clock
        self.stages: dict[str, _Stage] = {}

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def progress(self, stage: str, event: dict[str, Any]) -> None:
        state = self.stages.setdefault(stage, _Stage())
        position = step_of(event)
        if position is None:
            line = describe(event)
            if line:
                self._say(f"[{stage}] {line}")
            return
        step, total = position
        numbers = headline_numbers(event)
        if not numbers:
            return  # the trainer's end-of-training summary: the runner reports the stage's end
        now = self.clock()
        if state.first is None:
            state.first = (now, step)
        decile = step * 10 // total if total else -1
        slow = state.printed_at is not None and now - state.printed_at >= self.every_seconds
        if not (state.printed_at is None or decile > state.decile or slow):
            return
        state.decile, state.printed_at = max(decile, state.decile), now
        where = f"step {step}/{total} ({step / total:.0%})" if total else f"step {step}"
        timing = eta_text(state.first, now, step, total)
        self._say(f"[{stage}] {where} {format_numbers(numbers)}" + (f" | {timing}" if timing else ""))

    def output(self, stage: str, line: str) -> None:
        if line.strip():
            self.stages.setdefault(stage, _Stage()).tail.append(line.rstrip())

    def transition(self, status: RLHFRunStatus, events: list[tuple[str, str, str]]) -> None:
        for kind, reason, message in events:
            self._say(f"{'WARNING ' if kind == 'Warning' else ''}{reason}: {message}")
        for entry in status.stages:
            state = self.stages.setdefault(entry.name, _Stage())
            if entry.phase == state.phase:
                continue
            state.phase = entry.phase
            if entry.phase in ("Running", "Retrying"):
                state.first, state.decile, state.printed_at = None, -1, None  # a new attempt
            if entry.phase in ("Failed", "Retrying") and state.tail:
                self._say("\n".join(f"  | {line}" for line in state.tail))
                state.tail.clear()
            if entry.phase == "Succeeded":
                metrics = format_metrics(key_metrics(entry.metrics))
                self._say(f"[{entry.name}] done: {metrics}" if metrics else f"[{entry.name}] done")

    def finish(self, status: RLHFRunStatus, root: Path) -> None:
        console = Console(file=self.out, width=120, no_color=True, highlight=False)
        console.print()
        console.print(summary(status, root))
        self.out.flush()
