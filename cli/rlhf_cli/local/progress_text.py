"""Progress events (`@@rlhf {...}` lines, rlhf_api.progress) as short texts for the displays: pure.

Which events are steps and which numbers are headlines is the contract's (rlhf_api.progress and
rlhf_api.metric_names, shared with the operator's status); re-exported here for the displays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhf_api.progress import headline_numbers, step_of

__all__ = ["describe", "format_number", "format_numbers", "headline_numbers", "step_of"]


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
