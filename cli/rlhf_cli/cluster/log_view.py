"""`rlhf logs`: a Master pod's log with its progress events (`@@rlhf {...}`, rlhf_api.progress)
shown as `rlhf run` shows them, live bars on a terminal or the plain progress lines (every 10%,
with elapsed, ETA and rate) in a pipe; every other line passes through unchanged.

The log is read with the API's timestamps (`timestamps=true`), and the displays' clock is the
time each line was logged, running on with the wall clock after it: a log read at once (a stage
two hours in) gives the stage's own rate and ETA, not the speed of reading it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.text import Text
from rlhf_api import progress

from ..local.display import PlainDisplay, metrics_line
from ..local.progress_text import describe, format_numbers, headline_numbers, step_of
from ..local.throttle import ProgressThrottle
from ..report.summary import format_metrics, key_metrics
from ..stage_bars import StageBars

# What the API server puts before each line with timestamps=true (RFC 3339, nanoseconds).
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) ")


def split_timestamp(line: str) -> tuple[float | None, str]:
    """(when it was logged, the line) from a `timestamps=true` line; (None, line) without one."""
    found = _TIMESTAMP.match(line)
    if found is None:
        return None, line
    fraction = (found.group(2) or "")[:7]  # Python parses at most microseconds
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    try:
        when = dt.datetime.fromisoformat(found.group(1) + fraction + zone)
    except ValueError:
        return None, line
    return when.timestamp(), line[found.end() :]


def final_metrics(event: dict[str, Any]) -> dict[str, float]:
    """The numbers of a `done` event (the stage's result metrics)."""
    metrics = event.get("metrics")
    if not isinstance(metrics, dict):
        return {}
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class LogClock:
    """The time of the last line read, running on with `monotonic` after it."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.monotonic = monotonic
        self.base = (wall(), monotonic())

    def mark(self, when: float | None) -> None:
        if when is not None:
            self.base = (when, self.monotonic())

    def __call__(self) -> float:
        return self.base[0] + (self.monotonic() - self.base[1])


class LogDisplay(Protocol):
    def event(self, stage: str, event: dict[str, Any]) -> None: ...

    def line(self, text: str) -> None: ...

    def close(self) -> None: ...


class BarsLog:
    def __init__(self, console: Console, clock: Callable[[], float]) -> None:
        self.bars = StageBars(console, get_time=clock)

    def event(self, stage: str, event: dict[str, Any]) -> None:
        position = step_of(event)
        if position is not None:
            self.bars.step(stage, *position, format_numbers(headline_numbers(event)))
        elif event.get("event") == "done":
            self.bars.collapse(stage, "Succeeded", [format_metrics(key_metrics(stage, final_metrics(event)))])
        elif text := describe(event):
            self.bars.note(Text(f"  [{stage}] {text}", style="dim"))

    def line(self, text: str) -> None:
        self.bars.print(Text(text))

    def close(self) -> None:
        self.bars.stop()


class PlainLog:
    def __init__(self, out: TextIO, clock: Callable[[], float]) -> None:
        self.display = PlainDisplay(out, ProgressThrottle(clock=clock))

    def event(self, stage: str, event: dict[str, Any]) -> None:
        if event.get("event") == "done":
            self.display.say(f"[{stage}] done: {metrics_line(stage, final_metrics(event))}")
        else:
            self.display.progress(stage, event)

    def line(self, text: str) -> None:
        self.display.say(text)

    def close(self) -> None:
        pass


def show_log(lines: Iterable[str], stage: str, display: LogDisplay, clock: LogClock) -> None:
    """Each line to the display: a progress event as progress, anything else as it is."""
    try:
        for raw in lines:
            when, text = split_timestamp(raw)
            clock.mark(when)
            event = progress.parse(text)
            if event is None:
                display.line(text)
            else:
                display.event(str(event.get("stage") or stage), event)
    finally:
        display.close()
