"""The run at a glance, pure: stage rows and the headline before/after, from an RLHFRunStatus.

Shared by the end-of-run table in the terminal, `rlhf status` and the HTML report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from rlhf_api.metric_names import HEADLINE_COUNT, shown_results
from rlhf_api.progress_status import parse_time
from rlhf_api.stages import POLICY_STAGES
from rlhf_api.status import RLHFRunStatus, StageStatus


@dataclass(frozen=True)
class StageRow:
    name: str
    phase: str
    attempts: int
    seconds: float | None  # first start to completion (or to now while running)
    metrics: tuple[tuple[str, float], ...]
    message: str | None


@dataclass(frozen=True)
class Headline:
    """The run's headline metric before and after training, e.g. task_accuracy 0.475 -> 0.808."""

    metric: str
    before: float
    after: float

    def text(self, arrow: str = "->") -> str:
        return f"{self.metric} {format_value(self.before)} {arrow} {format_value(self.after)}"


def stage_span(stage: StageStatus, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime] | None:
    """(start, end) of a stage; a running or retrying one ends `now`."""
    start = parse_time(stage.start_time)
    end = parse_time(stage.completion_time) or (now if stage.phase in ("Running", "Retrying") else None)
    return None if start is None or end is None else (start, end)


def stage_seconds(stage: StageStatus, now: dt.datetime | None = None) -> float | None:
    span = stage_span(stage, now)
    return None if span is None else max(0.0, (span[1] - span[0]).total_seconds())


def key_metrics(stage: str, metrics: dict[str, float], limit: int = HEADLINE_COUNT) -> tuple[tuple[str, float], ...]:
    """A stage's first few result metrics, its kind's order (rlhf_api.metric_names)."""
    return shown_results(stage, metrics, limit)


def stage_rows(status: RLHFRunStatus, now: dt.datetime | None = None) -> list[StageRow]:
    return [
        StageRow(s.name, s.phase, s.attempts, stage_seconds(s, now), key_metrics(s.name, s.metrics), s.message)
        for s in status.stages
    ]


def headline(status: RLHFRunStatus) -> Headline | None:
    """task_accuracy of the final policy stage against where it started; else the eval reward.

    "Where it started": the comparison's baseline, else the stage's own measurement before
    training (PPO), else the previous policy stage's task_accuracy (SFT before DPO).
    """
    policy = [s for s in status.stages if s.name in POLICY_STAGES and s.metrics]
    if not policy:
        return None
    final = policy[-1].metrics
    if "task_accuracy" in final:
        before = final.get("eval_task_accuracy_baseline", final.get("task_accuracy_before"))
        if before is None and len(policy) > 1:
            before = policy[-2].metrics.get("task_accuracy")
        if before is not None:
            return Headline("task_accuracy", before, final["task_accuracy"])
    if "eval_reward_baseline" in final and "eval_reward_final" in final:
        return Headline("reward", final["eval_reward_baseline"], final["eval_reward_final"])
    return None


def format_value(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_metrics(metrics: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in metrics)
