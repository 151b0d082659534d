"""How often the plain display prints a stage's progress: few lines, each with ETA and rate.

For logs (no TTY: CI, `kubectl logs`, a file): a stage's first step, then one line per 10% of
its steps, plus at most one every `every_seconds` when steps are slow. Pure given the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..report.summary import format_duration


@dataclass
class _Stage:
    decile: int = -1  # the last tenth of the steps printed
    printed_at: float | None = None
    first: tuple[float, int] | None = None  # (time, step) of the first step seen in this attempt


def timing_text(elapsed: float | None, remaining: float | None, rate: float | None) -> str:
    """'25s, ETA 17s, 14.4 steps/s': what is known of elapsed time, time left and rate."""
    parts = [] if elapsed is None else [format_duration(elapsed)]
    if remaining is not None:
        parts.append(f"ETA {format_duration(max(0.0, remaining))}")
    if rate:
        parts.append(f"{rate:.3g} steps/s")
    return ", ".join(parts)


def eta_text(first: tuple[float, int] | None, now: float, step: int, total: int | None) -> str:
    """'25s, ETA 17s, 14.4 steps/s' from the rate since the attempt's first step seen."""
    if first is None:
        return ""
    elapsed = now - first[0]
    done = step - first[1]
    rate = done / elapsed if done > 0 and elapsed > 0 else None
    remaining = max(0, total - step) / rate if rate and total else None
    return timing_text(elapsed, remaining, rate)


class ProgressThrottle:
    def __init__(self, every_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_seconds = every_seconds
        self.clock = clock
        self.stages: dict[str, _Stage] = {}

    def reset(self, stage: str) -> None:
        """A new attempt: its first step prints again, and its rate starts afresh."""
        self.stages.pop(stage, None)

    def due(self, stage: str, step: int, total: int | None) -> str | None:
        """The timing text when a line is due for this step, else None."""
        state = self.stages.setdefault(stage, _Stage())
        now = self.clock()
        if state.first is None:
            state.first = (now, step)
        decile = step * 10 // total if total else -1
        slow = state.printed_at is not None and now - state.printed_at >= self.every_seconds
        if not (state.printed_at is None or decile > state.decile or slow):
            return None
        state.decile, state.printed_at = max(decile, state.decile), now
        return eta_text(state.first, now, step, total)
