"""What `rlhf run` shows while it works: the Display protocol and the plain-line display.

The runner calls a Display with four kinds of news: a stage's progress event (the trainer's
`@@rlhf {...}` lines, rlhf_api.progress), any other line a stage printed (also in its
stage.log), the run's transitions after a reconcile pass (its events), and the end.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path
from typing import Any, Protocol, TextIO

from rich.console import Console
from rlhf_api.metric_names import shown_results, step_metrics
from rlhf_api.status import RLHFRunStatus

from ..report.build import REPORT_HTML, REPORT_JSON
from .progress_text import describe, step_of
from .summary_table import summary
from .throttle import ProgressThrottle

# (event type Normal|Warning, reason, message): one run event, as posted on a cluster.
EventNote = tuple[str, str, str]

TAIL_LINES = 8  # a failed stage's last output lines, shown with its failure


class Display(Protocol):
    def progress(self, stage: str, event: dict[str, Any]) -> None: ...

    def output(self, stage: str, line: str) -> None: ...

    def transition(self, status: RLHFRunStatus, events: list[EventNote]) -> None: ...

    def finish(self, status: RLHFRunStatus, root: Path) -> None: ...


def format_progress(stage: str, event: dict[str, Any]) -> str | None:
    """One line for a progress event, or None when it has nothing worth a line."""
    event = {k: v for k, v in event.items() if k != "stage"}
    if event.get("event") is not None:
        text = describe(event)  # done and merged say nothing: the state machine reports the end
        return f"[{stage}] {text}" if text else None
    step, total = event.pop("step", None), event.pop("max_steps", None)
    head = f"[{stage}]" + (f" step {step}/{total}" if total else f" step {step}" if step is not None else "")
    parts = []
    for key in step_metrics(stage):
        value = event.get(key)
        if value is not None:
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join([head, *parts]) if parts else None


def metrics_line(stage: str, metrics: dict[str, float]) -> str:
    """Every result metric of the stage's kind that it reported (rlhf_api.metric_names)."""
    return ", ".join(f"{k}={v:.4g}" for k, v in shown_results(stage, metrics)) or "see result.json"


def finish_lines(status: RLHFRunStatus, root: Path) -> list[str]:
    """What the run's end says besides the summary table: outcome, what next, where the report is."""
    html, json_report = root / REPORT_HTML, root / REPORT_JSON
    report = f"{html} (status: {json_report})" if html.is_file() else str(json_report)
    if status.phase == "Succeeded":
        return [f"run succeeded. Report: {report}"]
    if status.phase == "Suspended":
        return [f"run suspended. Run the same command again to resume. Report: {report}"]
    return [
        f"run {status.phase.lower()}: {status.message}",
        f"finished stages are kept; run the same command again to retry. Report: {report}",
    ]


class PlainDisplay:
    """Plain lines, for logs and terminals alike: a stage's progress every 10% (ProgressThrottle)."""

    def __init__(self, out: TextIO | None = None, throttle: ProgressThrottle | None = None) -> None:
        self.out = out or sys.stdout
        self.tails: dict[str, deque[str]] = {}
        self.phases: dict[str, str] = {}
        self.throttle = throttle or ProgressThrottle()

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def progress(self, stage: str, event: dict[str, Any]) -> None:
        line = format_progress(stage, event)
        position = step_of(event)
        if line and position is not None:
            timing = self.throttle.due(stage, *position)
            line = None if timing is None else f"{line} | {timing}" if timing else line
        if line:
            self.say(line)

    def output(self, stage: str, line: str) -> None:
        self.tails.setdefault(stage, deque(maxlen=TAIL_LINES)).append(line)

    def transition(self, status: RLHFRunStatus, events: list[EventNote]) -> None:
        for type_, _reason, message in events:
            self.say(("warning: " if type_ == "Warning" else "") + message)
        for stage in status.stages:
            before, self.phases[stage.name] = self.phases.get(stage.name), stage.phase
            if before == stage.phase or (before is None and stage.phase in ("Succeeded", "Skipped")):
                continue  # unchanged, or finished before this command started
            if stage.phase == "Running":
                self.throttle.reset(stage.name)
            if stage.phase == "Succeeded":
                self.say(f"[{stage.name}] done: {metrics_line(stage.name, stage.metrics)}")
            elif stage.phase in ("Retrying", "Failed"):
                tail = self.tails.pop(stage.name, None)
                if tail:
                    self.say("\n".join(f"  | {line}" for line in tail))

    def finish(self, status: RLHFRunStatus, root: Path) -> None:
        console = Console(file=self.out, width=120, no_color=True, highlight=False)
        console.print()
        console.print(summary(status, root))
        for line in finish_lines(status, root):
            self.say(line)
