"""Progress lines on stdout that `rlhf run` turns into a terminal display and the operator
reads from the Master pod's log into the RLHFRun status.

One line per event: the marker, then compact JSON. Import-light. A training-step event has
`step`, usually `max_steps`, and numbers; other events have an `event` name (resume, compare,
compared, merged, done).

Reading is total: the lines come from whatever runs in the stage (a `function` reward, a model's
remote code can print anything), so `read` returns an event whose every value a consumer can
use (a bounded size and depth, `stage`/`event` strings, a `step` and `max_steps` within int64),
or nothing, and says what it dropped; it never raises.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .bounds import INT64_MAX, finite_float, in_int64, int64, is_number
from .metric_names import HEADLINE_COUNT, pick, step_headline

MARKER = "@@rlhf "
MAX_LINE = 64 * 1024  # a progress line is a few hundred bytes; more is not the trainer's
MAX_DEPTH = 3  # the event, a `metrics` mapping, a list in it: deeper values are dropped
MAX_STRING = 4096
_TEXT_KEYS = ("stage", "event")


def emit(stage: str, **fields: Any) -> None:
    """Print one progress event, e.g. emit('sft', step=10, max_steps=50, loss=1.2)."""
    payload = {"stage": stage, **{k: v for k, v in fields.items() if v is not None}}
    sys.stdout.write(MARKER + json.dumps(payload, separators=(",", ":"), default=float) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Read:
    """One line read: its event (None: not a progress line, or nothing usable) and what of it was
    dropped or clamped, in words (empty: taken as printed)."""

    event: dict[str, Any] | None = None
    dropped: tuple[str, ...] = ()


def read(line: str) -> Read:
    """The progress event of one output line, made safe for every consumer; never raises."""
    if not line.startswith(MARKER):
        return Read()
    if len(line) > MAX_LINE:
        return Read(dropped=(f"a progress line of {len(line) // 1024} KiB (over {MAX_LINE // 1024} KiB)",))
    try:
        value = json.loads(line[len(MARKER) :])
    except (ValueError, RecursionError, MemoryError) as error:  # RecursionError: nesting too deep
        return Read(dropped=(f"a progress line that is not JSON ({type(error).__name__})",))
    if not isinstance(value, dict):
        return Read(dropped=(f"a progress line that is not a JSON object ({type(value).__name__})",))
    dropped: list[str] = []
    event = _clean(value, 1, dropped)
    for key in _TEXT_KEYS:
        if key in event and not isinstance(event[key], str):
            dropped.append(f"{key} {_show(event.pop(key))} (not a string)")
    if "step" in event and not _count(event["step"], 0):
        dropped.append(f"step {_show(event.pop('step'))} (not a whole count within int64)")
    if "max_steps" in event and not _count(event["max_steps"], 1):
        dropped.append(f"max_steps {_show(event.pop('max_steps'))} (not a count within int64)")
    return Read(event, tuple(dropped))


def _count(value: Any, low: int) -> bool:
    """A number within [low, int64's top]; an int compared exactly (float(2**63 - 1) is 2**63)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return low <= value <= INT64_MAX
    number = finite_float(value)
    return number is not None and low <= number < 2.0**63


def parse(line: str) -> dict[str, Any] | None:
    return read(line).event


def _clean(value: dict[str, Any], depth: int, dropped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        kept = _clean_value(item, depth, dropped, key)
        if kept is not _DROPPED:
            out[key] = kept
    return out


_DROPPED = object()


def _clean_value(item: Any, depth: int, dropped: list[str], key: str) -> Any:
    if isinstance(item, str):
        return item[:MAX_STRING]
    if isinstance(item, int) and not isinstance(item, bool) and not in_int64(item):
        dropped.append(f"{key} {_show(item)} (beyond int64)")
        return _DROPPED
    if item is None or isinstance(item, bool | int | float):
        return item  # a NaN stays: it is a guard's business (numbers_of keeps only finite ones)
    if depth >= MAX_DEPTH:
        dropped.append(f"{key} (nested deeper than {MAX_DEPTH} levels)")
        return _DROPPED
    if isinstance(item, dict):
        return _clean(item, depth + 1, dropped)
    if isinstance(item, list):
        kept = [_clean_value(v, depth + 1, dropped, key) for v in item]
        return [v for v in kept if v is not _DROPPED]
    return _DROPPED


def _show(value: Any) -> str:
    """A value for a message, short whatever it is."""
    if isinstance(value, int) and not isinstance(value, bool) and not in_int64(value):
        return f"of about {int(value.bit_length() * 0.30103) + 1} digits"  # str() of a huge int may raise
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


# An event from the trainer's own end-of-training summary, not a step: no headline numbers.
# Only `train_loss` tells it apart: transformers 5 puts `train_runtime` in every step's log too.
_SUMMARY_KEYS = ("train_loss",)


def step_of(event: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """(step, total) of a training-step event, None for other events."""
    if event.get("event") is not None or not is_number(event.get("step")):
        return None
    step = int64(event.get("step"))
    if step is None:  # NaN, Infinity: not a position
        return None
    total = int64(event.get("max_steps"))
    return step, total if total else None


def headline_numbers(event: Mapping[str, Any], limit: int = HEADLINE_COUNT) -> list[tuple[str, float]]:
    """The first few of the stage kind's per-step headline numbers (rlhf_api.metric_names) in the event."""
    if any(k in event for k in _SUMMARY_KEYS):
        return []
    return list(pick(step_headline(event.get("stage")), event, limit))
