"""Progress events (`@@rlhf {...}` lines, rlhf_api.progress) as short texts for the displays: pure.

A training-step event has `step`, usually `max_steps`, and numbers; other events have an
`event` name (resume, compare, compared, merged, done).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The numbers worth a glance per step, in this order (the rest is in TensorBoard and the report).
HEADLINE_KEYS = (
    "loss",
    "accuracy",
    "rewards/accuracies",
    "rewards/margins",
    "reward_mean",
    "kl",
    "eval_loss",
    "learning_rate",
)
# An event from the trainer's own end-of-training summary, not a step: no headline numbers.
# Only `train_loss` tells it apart: transformers 5 puts `train_runtime` in every step's log too.
_SUMMARY_KEYS = ("train_loss",)


def step_of(event: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """(step, total) of a training-step event, None for other events."""
    step = event.get("step")
    if event.get("event") is not None or not isinstance(step, int | float):
        return None
    total = event.get("max_steps")
    return int(step), int(total) if isinstance(total, int | float) and total > 0 else None


def headline_numbers(event: Mapping[str, Any], limit: int = 4) -> list[tuple[str, float]]:
    if any(k in event for k in _SUMMARY_KEYS):
        return []
    found = [(k, float(event[k])) for k in HEADLINE_KEYS if isinstance(event.get(k), int | float)]
    return found[:limit]


def format_number(value: float) -> str:
    return f"{value:.4g}"


def format_numbers(numbers: list[tuple[str, float]]) -> str:
    return " ".join(f"{k}={format_number(v)}" for k, v in numbers)


def describe(event: Mapping[str, Any]) -> str | None:
    """One line for a non-step event, or None for those nothing needs to say about."""
    kind = event.get("event")
    if kind == "resume":
        return f"resuming from {event.get('checkpoint')}"
    if kind == "compare":
        return f"comparing its starting and trained model on {event.get('prompts')} held-out prompts"
    if kind == "compared":
        parts = []
        if isinstance(event.get("eval_win_rate"), int | float):
            parts.append(f"win rate {event['eval_win_rate']:.1%}")
        before, after = event.get("eval_task_accuracy_baseline"), event.get("eval_task_accuracy_final")
        if isinstance(before, int | float) and isinstance(after, int | float):
            parts.append(f"task_accuracy {before:.3g} -> {after:.3g}")
        return "compared: " + (", ".join(parts) or "see eval/summary.json")
    if kind in ("done", "merged", None):
        return None  # the runner reports the end of a stage; merged paths are in the result
    extras = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("stage", "event"))
    return f"{kind} {extras}".strip()
