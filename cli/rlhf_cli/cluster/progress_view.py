"""A run's live state as `rlhf status -w` shows it, pure: the RLHFRun as the API returned it in,
one view per stage and plain lines out.

Each running stage's progress is the operator's `status.stages[].progress` (step, totalSteps,
stepsPerSecond, estimatedCompletionTime, metrics); a stage waiting for Kueue has phase
`Queued`. Both are read from the raw object, defensively: a status written by an operator
that has no progress (older, or newer with other fields) shows phases and results only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlhf_api.bounds import finite_float
from rlhf_api.metric_names import rank_of
from rlhf_api.progress_status import parse_time
from rlhf_api.status import StageStatus
from rlhf_operator.reconcile.status_store import load_status

from ..local.display import metrics_line
from ..local.progress_text import format_numbers
from ..local.throttle import timing_text
from ..report.summary import stage_seconds

FINISHED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class StageView:
    entry: StageStatus  # what validates of the stage's status (the phase may be newer: see `phase`)
    phase: str  # as written, e.g. Queued from a newer operator
    step: int | None = None
    total: int | None = None
    rate: float | None = None  # steps/s
    finish_at: dt.datetime | None = None  # the operator's estimate
    numbers: tuple[tuple[str, float], ...] = field(default=())  # the stage's latest headline numbers

    @property
    def name(self) -> str:
        return self.entry.name

    def key(self) -> tuple[Any, ...]:
        """What a person would see change (the clock ticking aside)."""
        entry = self.entry
        return (self.phase, entry.attempts, entry.message, self.step, self.total, self.numbers, entry.metrics)


def _raw_status(run: Mapping[str, Any]) -> Mapping[str, Any]:
    found = run.get("status")
    return found if isinstance(found, Mapping) else {}


def _number(value: Any) -> float | None:
    """A finite number from the raw status (written by any operator version, or by hand): a
    NaN, an Infinity or an int beyond a float is none (int() of one would raise)."""
    return finite_float(value)


def ordered_numbers(stage: str, metrics: Any) -> tuple[tuple[str, float], ...]:
    """The status' step numbers in the stage kind's headline order (rlhf_api.metric_names), then
    the rest by name."""
    if not isinstance(metrics, Mapping):
        return ()
    found = {str(k): v for k, v in metrics.items() if _number(v) is not None}
    rank = rank_of(stage)
    keys = sorted(found, key=lambda k: (rank.get(k, len(rank)), k))
    return tuple((k, float(found[k])) for k in keys)


def stage_view(entry: StageStatus, raw: Mapping[str, Any]) -> StageView:
    phase = raw.get("phase") if isinstance(raw.get("phase"), str) else entry.phase
    progress = raw.get("progress")
    if not isinstance(progress, Mapping) or _number(progress.get("step")) is None:
        return StageView(entry, str(phase))
    total = _number(progress.get("totalSteps"))
    return StageView(
        entry,
        str(phase),
        step=int(progress["step"]),
        total=int(total) if total else None,
        rate=_number(progress.get("stepsPerSecond")),
        finish_at=parse_time(progress.get("estimatedCompletionTime")),
        numbers=ordered_numbers(entry.name, progress.get("metrics")),
    )


def stage_views(run: Mapping[str, Any]) -> list[StageView]:
    raw_status = _raw_status(run)
    raw_stages = {s.get("name"): s for s in raw_status.get("stages") or [] if isinstance(s, Mapping)}
    return [stage_view(entry, raw_stages.get(entry.name, {})) for entry in load_status(raw_status).stages]


def run_phase(run: Mapping[str, Any]) -> str:
    return load_status(run.get("status")).phase


def run_progress(run: Mapping[str, Any]) -> str:
    """'1/3 stages': the operator's own text when it writes one, else counted here."""
    raw_status = _raw_status(run)
    if isinstance(raw_status.get("progress"), str):
        return str(raw_status["progress"])
    stages = load_status(raw_status).stages
    return f"{sum(s.phase in ('Succeeded', 'Skipped') for s in stages)}/{len(stages)} stages"


def unhealthy(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reason, message) of a Healthy=False condition (a guard tripped), read from the raw status."""
    raw_status = _raw_status(run)
    return [
        (str(c.get("reason", "")), str(c.get("message", "")))
        for c in raw_status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") == "Healthy" and c.get("status") == "False"
    ]


def timing(view: StageView, now: dt.datetime) -> str:
    start = parse_time(view.entry.start_time)
    elapsed = (now - start).total_seconds() if start else None
    remaining = (view.finish_at - now).total_seconds() if view.finish_at else None
    return timing_text(elapsed, remaining, view.rate)


def plain_line(view: StageView, now: dt.datetime) -> str | None:
    """One line for a stage's current state, as the laptop's plain display words it; None for Pending."""
    name, entry = view.name, view.entry
    if view.phase == "Running" and view.step is not None:
        head = f"[{name}] step {view.step}/{view.total}" if view.total else f"[{name}] step {view.step}"
        numbers = format_numbers(list(view.numbers))
        when = timing(view, now)
        return " ".join(p for p in (head, numbers) if p) + (f" | {when}" if when else "")
    if view.phase == "Running":
        return f"[{name}] starting" + (f" (attempt {entry.attempts})" if entry.attempts > 1 else "")
    if view.phase == "Queued":
        return f"[{name}] queued: {entry.message or 'waiting for admission'}"
    if view.phase == "Retrying":
        return f"[{name}] attempt {entry.attempts} failed: {entry.message or '?'}; retrying"
    if view.phase == "Succeeded":
        seconds = stage_seconds(entry, now)
        took = f" in {timing_text(seconds, None, None)}" if seconds is not None else ""
        return f"[{name}] done{took}: {metrics_line(name, entry.metrics)}"
    if view.phase == "Failed":
        return f"[{name}] failed: {entry.message or '?'}"
    if view.phase in ("Skipped", "Suspended"):
        return f"[{name}] {view.phase.lower()}"
    return None


def final_line(run: Mapping[str, Any]) -> str:
    status = load_status(run.get("status"))
    if status.phase == "Succeeded":
        return "run succeeded"
    return f"run {status.phase.lower()}" + (f": {status.message}" if status.message else "")
