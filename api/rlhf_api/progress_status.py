"""Progress events folded into a stage's status entry (StageProgress). Pure.

The operator folds the events it reads from the Master pod's log, `rlhf run` those of the stage
process: both through `fold`, so step, percent, speed and ETA mean the same in both places.
The fold depends only on the events and the previous progress, not on the clock: a pass that
reads nothing new leaves the status as it is (no write).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .bounds import finite_float
from .metric_names import status_step_metrics
from .progress import step_of
from .status import StageProgress

_SUMMARY_KEYS = ("train_loss",)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
_FRACTION = re.compile(r"\.(\d+)")  # the trainer's end-of-training summary: not a step's numbers


@dataclass(frozen=True)
class TimedEvent:
    """A progress event and when it was printed (the log line's timestamp)."""

    time: datetime
    event: Mapping[str, Any]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: the log's timestamps are finer than seconds, and an
    event must not be taken for new when its line is read again."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 (any fraction, nanoseconds included) to an aware datetime; None if unreadable."""
    if not text:
        return None
    # Python takes at most 6 fractional digits; the kubelet writes 9
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip().replace("Z", "+00:00"))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def numbers_of(event: Mapping[str, Any]) -> dict[str, float]:
    """The finite status numbers of one step event (a NaN is a guard's business, not a figure):
    the stage kind's per-step headline and what the guards judge (rlhf_api.metric_names)."""
    if any(k in event for k in _SUMMARY_KEYS):
        return {}
    found = {}
    stage = event.get("stage")
    for key in status_step_metrics(stage if isinstance(stage, str) else None):
        value = finite_float(event.get(key))
        if value is not None:
            found[key] = value
    return found


def new_events(previous: StageProgress | None, events: Sequence[TimedEvent]) -> list[TimedEvent]:
    """The events printed after the last one already folded (a log read may overlap the last)."""
    last = parse_time(previous.last_progress_time) if previous is not None else None
    return [e for e in events if last is None or e.time > last]


def fold(previous: StageProgress | None, events: Sequence[TimedEvent]) -> StageProgress | None:
    """`previous` advanced by `events` (in log order). Speed is measured from the previous
    position to the last step event of this batch, so it spans one read interval; a step lower
    than the previous one (a retry resumed from its checkpoint) starts the measure afresh."""
    fresh = new_events(previous, events)
    if not fresh:
        return previous
    progress = previous.model_copy(deep=True) if previous is not None else StageProgress()
    anchor_time = parse_time(progress.last_progress_time) if previous is not None else None
    anchor: tuple[datetime, int] | None = (anchor_time, progress.step) if anchor_time is not None else None
    last_step: tuple[datetime, int] | None = None
    for item in fresh:
        position = step_of(item.event)
        if position is None:
            continue
        step, total = position
        if total is not None:
            progress.total_steps = total
        if progress.total_steps:  # a step above the total is shown as the total (the reader warns)
            step = min(step, progress.total_steps)
        if anchor is None or step < anchor[1]:
            anchor = (item.time, step)
        last_step = (item.time, step)
        progress.step = max(0, step)
        progress.metrics.update(numbers_of(item.event))
    progress.last_progress_time = format_time(fresh[-1].time)
    if last_step is not None:
        if anchor is not None and last_step[0] > anchor[0] and last_step[1] > anchor[1]:
            seconds = (last_step[0] - anchor[0]).total_seconds()
            speed = round((last_step[1] - anchor[1]) / seconds, 4)
            progress.steps_per_second = speed if math.isfinite(speed) else None
        total = progress.total_steps
        progress.percent = round(min(100.0, 100.0 * progress.step / total), 1) if total else None
        rate = progress.steps_per_second
        finish = last_step[0].timestamp() + max(0, total - progress.step) / rate if total and rate else None
        # A finish past what a datetime holds (a crawl through 10**18 steps) is no estimate.
        if finish is None or not math.isfinite(finish) or finish >= _LATEST:
            progress.estimated_completion_time = None
        else:
            progress.estimated_completion_time = format_time(datetime.fromtimestamp(finish, UTC))
    return progress


def short_duration(seconds: float) -> str:
    """A coarse duration for a printer column: 45s, 12m, 1h05m, 2d03h."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def eta_text(progress: StageProgress | None) -> str | None:
    """Time left as estimated at the last progress event ("12m"), for the ETA printer column."""
    if progress is None:
        return None
    finish = parse_time(progress.estimated_completion_time)
    last = parse_time(progress.last_progress_time)
    if finish is None or last is None:
        return None
    return short_duration((finish - last).total_seconds())


def percent_text(progress: StageProgress | None) -> str | None:
    """ "45%" (or "step 120" when the total is unknown), for the Progress printer column."""
    if progress is None:
        return None
    if progress.percent is not None:
        return f"{progress.percent:.0f}%"
    return f"step {progress.step}" if progress.step else None
