"""Progress events folded into StageProgress, and the RL health guards: pure, table-driven."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rlhf_api.guards import Guards, evaluate
from rlhf_api.progress_status import (
    TimedEvent,
    eta_text,
    fold,
    format_time,
    parse_time,
    percent_text,
    short_duration,
)
from rlhf_api.status import StageProgress

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def at(seconds: float, **event: Any) -> TimedEvent:
    return TimedEvent(T0 + timedelta(seconds=seconds), {"stage": "ppo", **event})


def test_first_batch_gives_step_percent_speed_and_eta() -> None:
    progress = fold(None, [at(0, step=10, max_steps=110, loss=1.5), at(20, step=30, max_steps=110, loss=1.2)])
    assert progress is not None
    assert (progress.step, progress.total_steps, progress.percent) == (30, 110, 27.3)
    assert progress.steps_per_second == 1.0  # 20 steps in 20 s
    assert progress.estimated_completion_time == "2026-12-06T12:01:40.000Z"  # 80 steps left at 1/s after 12:00:20
    assert progress.last_progress_time == "2026-12-06T12:00:20.000Z"
    assert progress.metrics == {"loss": 1.2}
    assert eta_text(progress) == "1m" and percent_text(progress) == "27%"


def test_next_batch_measures_speed_from_the_previous_position() -> None:
    first = fold(None, [at(0, step=10, max_steps=110)])
    assert first is not None and first.steps_per_second is None and first.estimated_completion_time is None
    second = fold(first, [at(40, step=30, max_steps=110, kl=0.05, reward_mean=1.5)])
    assert second is not None and second.steps_per_second == 0.5
    assert eta_text(second) == "2m" and second.metrics == {"kl": 0.05, "reward_mean": 1.5}


@pytest.mark.parametrize(
    ("events", "expect"),
    [
        # a line read again (overlapping sinceTime) is not a new event: nothing changes
        ([at(20, step=30, max_steps=110)], {"step": 30, "steps_per_second": 1.0}),
        # a retry resumed from its checkpoint at a lower step: the speed is measured afresh
        ([at(100, step=20, max_steps=110), at(110, step=25, max_steps=110)], {"step": 25, "steps_per_second": 0.5}),
        # non-step events move only lastProgressTime (alive, no position)
        ([at(50, event="compare", prompts=16)], {"step": 30, "last_progress_time": "2026-12-06T12:00:50.000Z"}),
        # non-finite numbers are not figures: the old value stays
        ([at(30, step=40, max_steps=110, loss=math.nan)], {"step": 40, "metrics": {"loss": 1.2}}),
        # the trainer's end-of-training summary brings no headline numbers
        ([at(30, step=110, max_steps=110, train_loss=0.3, loss=9.0)], {"percent": 100.0, "metrics": {"loss": 1.2}}),
        # an event without max_steps keeps the total known from earlier ones
        ([at(30, step=40)], {"percent": 36.4, "total_steps": 110}),
    ],
)
def test_fold_cases(events: list[TimedEvent], expect: dict[str, Any]) -> None:
    base = fold(None, [at(0, step=10, max_steps=110, loss=1.5), at(20, step=30, max_steps=110, loss=1.2)])
    progress = fold(base, events)
    assert progress is not None
    for key, value in expect.items():
        assert getattr(progress, key) == value, key


def test_no_total_shows_the_step() -> None:
    progress = fold(None, [at(0, step=7)])
    assert progress is not None and progress.percent is None and percent_text(progress) == "step 7"
    assert eta_text(progress) is None and fold(None, []) is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m"), (3599, "59m"), (3900, "1h05m"), (90000, "1d01h")]
)
def test_short_duration(seconds: float, text: str) -> None:
    assert short_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("2026-12-06T12:00:20.123456789Z", datetime(2026, 12, 6, 12, 0, 20, 123456, tzinfo=UTC)),  # the kubelet's
        ("2026-12-06T12:00:20Z", datetime(2026, 12, 6, 12, 0, 20, tzinfo=UTC)),
        ("2026-12-06T12:00:20.5+01:00", datetime(2026, 12, 6, 11, 0, 20, 500000, tzinfo=UTC)),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_time(text: str | None, expect: datetime | None) -> None:
    assert parse_time(text) == expect
    if expect is not None:
        assert parse_time(format_time(expect)) == expect.replace(microsecond=expect.microsecond // 1000 * 1000)


GUARDS = Guards(max_kl=0.5, min_reward_std=0.01, action="stop")


@pytest.mark.parametrize(
    ("guards", "event", "tripped"),
    [
        (None, {"step": 1, "loss": 0.3}, []),
        (None, {"step": 1, "loss": math.nan}, [("loss", "non-finite", "warn")]),  # always, even with no guards
        (GUARDS, {"step": 1, "policy_loss": math.inf}, [("policy_loss", "non-finite", "stop")]),
        (GUARDS, {"step": 1, "kl": 0.7}, [("kl", "> maxKL 0.5", "stop")]),
        (GUARDS, {"step": 1, "kl": 0.5}, []),  # at the limit: not above it
        (GUARDS, {"step": 1, "kl": math.nan}, [("kl", "> maxKL 0.5", "stop")]),
        (GUARDS, {"step": 1, "reward_std": 0.001}, [("reward_std", "< minRewardStd 0.01", "stop")]),
        (GUARDS, {"step": 1, "reward_std": 0.2, "kl": 0.1, "loss": 0.4}, []),
        (Guards(max_kl=0.5), {"step": 1, "kl": 2.0, "reward_std": 0.0}, [("kl", "> maxKL 0.5", "warn")]),
        (GUARDS, {"step": 1, "kl": True}, []),  # not a number
        (GUARDS, {"event": "compared", "eval_win_rate": 0.6}, []),
    ],
)
def test_guards(guards: Guards | None, event: dict[str, Any], tripped: list[tuple[str, str, str]]) -> None:
    assert [(t.metric, t.limit, t.action) for t in evaluate(guards, event)] == tripped


def test_guards_in_a_spec_are_camel_case() -> None:
    guards = Guards.model_validate({"maxKL": 0.3, "minRewardStd": 0.05, "action": "stop"})
    assert (guards.max_kl, guards.min_reward_std, guards.action) == (0.3, 0.05, "stop")
    assert StageProgress().model_dump(by_alias=True, exclude_none=True) == {"step": 0, "metrics": {}}
