"""`rlhf status NAME -w`: the run's status, as the API sends each change, drawn as the laptop's
live display (TTY: stage_bars) or as plain lines printed only when something changed (pipes, logs).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.text import Text
from rlhf_api.progress_status import parse_time

from ..local.progress_text import format_numbers
from ..report.summary import format_duration, format_metrics, key_metrics, stage_seconds
from ..stage_bars import Reported, StageBars
from .progress_view import FINISHED, StageView, final_line, plain_line, run_phase, run_progress, stage_views, unhealthy


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WatchDisplay(Protocol):
    def show(self, run: Mapping[str, Any]) -> None: ...

    def close(self, run: Mapping[str, Any] | None) -> None: ...


def _title(run: Mapping[str, Any]) -> str:
    meta = run.get("metadata") or {}
    pipeline = (run.get("spec") or {}).get("pipeline")  # unset: the default, as the status lists it
    names = pipeline if isinstance(pipeline, list) else [view.name for view in stage_views(run)]
    stages = f" ({' -> '.join(map(str, names))})" if names else ""
    return f"RLHFRun {meta.get('namespace', '?')}/{meta.get('name', '?')}{stages}"


class PlainWatch:
    """A line per change: a stage's progress, phase or numbers; a tripped guard; the run's phase."""

    def __init__(self, out: TextIO, now: Callable[[], dt.datetime] = _now) -> None:
        self.out, self.now = out, now
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.warned: set[tuple[str, str]] = set()
        self.run_state: tuple[str, str] | None = None

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def show(self, run: Mapping[str, Any]) -> None:
        state = (run_phase(run), run_progress(run))
        if self.run_state is None:
            self.say(_title(run))
        if state != self.run_state and state[0] not in FINISHED:
            self.say(f"run {state[0].lower()}, {state[1]}")
        self.run_state = state
        for reason, message in unhealthy(run):
            if (reason, message) not in self.warned:
                self.warned.add((reason, message))
                self.say(f"warning: unhealthy: {reason}: {message}")
        now = self.now()
        for view in stage_views(run):
            if self.seen.get(view.name) == view.key():
                continue
            self.seen[view.name] = view.key()
            line = plain_line(view, now)
            if line:
                self.say(line)

    def close(self, run: Mapping[str, Any] | None) -> None:
        if run is not None and run_phase(run) in FINISHED:
            self.say(final_line(run))


class BarsWatch:
    """The laptop's live bars, fed from the status: rate, ETA and elapsed are the operator's."""

    def __init__(self, console: Console, now: Callable[[], dt.datetime] = _now) -> None:
        self.console, self.now = console, now
        self.bars = StageBars(console, wall=lambda: self.now().timestamp())
        self.phases: dict[str, tuple[str, int]] = {}
        self.warned: set[tuple[str, str]] = set()
        self.titled = False

    def show(self, run: Mapping[str, Any]) -> None:
        if not self.titled:
            self.titled = True
            self.bars.print(Text(_title(run), style="bold"))
        for reason, message in unhealthy(run):
            if (reason, message) not in self.warned:
                self.warned.add((reason, message))
                self.bars.print(Text(f"Unhealthy: {reason}: {message}", style="yellow"))
        for view in stage_views(run):
            self._stage(view)

    def _stage(self, view: StageView) -> None:
        name, entry = view.name, view.entry
        before, self.phases[name] = self.phases.get(name), (view.phase, entry.attempts)
        if view.phase == "Running" and view.step is not None:
            started = parse_time(entry.start_time)
            timing = Reported(
                started.timestamp() if started else None,
                view.finish_at.timestamp() if view.finish_at else None,
                view.rate,
            )
            self.bars.report(name, view.step, view.total, format_numbers(list(view.numbers[:4])), timing)
        elif view.phase == "Running":
            self.bars.waiting(name, "starting")
        elif view.phase == "Queued":
            self.bars.waiting(name, f"queued: {entry.message or 'waiting for admission'}")
        elif before == self.phases[name] or view.phase == "Pending":
            return
        elif view.phase == "Retrying":
            self.bars.remove(name)
            self.bars.print(Text(f"↻ {name} attempt {entry.attempts} failed: {entry.message or '?'}", style="yellow"))
        else:
            seconds = stage_seconds(entry, self.now())
            detail = entry.message if view.phase == "Failed" else format_metrics(key_metrics(entry.name, entry.metrics))
            self.bars.collapse(name, view.phase, ["" if seconds is None else format_duration(seconds), detail or ""])

    def close(self, run: Mapping[str, Any] | None) -> None:
        self.bars.stop()
        if run is not None and run_phase(run) in FINISHED:
            self.console.print(final_line(run), highlight=False)


def follow(runs: Iterable[Mapping[str, Any]], display: WatchDisplay) -> int:
    """Show each version of the run until it finishes: 0 when it succeeded, 1 when it failed,
    130 on Ctrl-C. A failed read (the run deleted, the API gone) propagates after the display
    is put away."""
    last: Mapping[str, Any] | None = None
    try:
        for run in runs:
            last = run
            display.show(run)
            if run_phase(run) in FINISHED:
                break
    except KeyboardInterrupt:
        display.close(None)
        return 130
    except BaseException:
        display.close(None)
        raise
    display.close(last)
    return 0 if last is not None and run_phase(last) == "Succeeded" else 1
