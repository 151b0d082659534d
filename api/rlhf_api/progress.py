"""Progress lines on stdout that `rlhf run` turns into a terminal display and the operator
reads from the Master pod's log into the RLHFRun status.

One line per event: the marker, then compact JSON. Import-light. A training-step event has
`step`, usually `max_steps`, and numbers; other events have an `event` name (resume, compare,
compared, merged, done).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from .metric_names import HEADLINE_COUNT, pick, step_headline

MARKER = "@@rlhf "


def emit(stage: str, **fields: Any) -> None:
    """Print one progress event, e.g. emit('sft', step=10, max_steps=50, loss=1.2)."""
    payload = {"stage": stage, **{k: v for k, v in fields.items() if v is not None}}
    sys.stdout.write(MARKER + json.dumps(payload, separators=(",", ":"), default=float) + "\n")
    sys.stdout.flush()


def parse(line: str) -> dict[str, Any] | None:
    if not line.startswith(MARKER):
        return None
    try:
        value = json.loads(line[len(MARKER) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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


def headline_numbers(event: Mapping[str, Any], limit: int = HEADLINE_COUNT) -> list[tuple[str, float]]:
    """The first few of the stage kind's per-step headline numbers (rlhf_api.metric_names) in the event."""
    if any(k in event for k in _SUMMARY_KEYS):
        return []
    return list(pick(step_headline(event.get("stage")), event, limit))
