"""The run at a glance: stage rows, durations and the headline before/after, pure."""

from __future__ import annotations

import datetime as dt

import pytest
from rlhf_api.status import RLHFRunStatus, StageStatus
from rlhf_cli.report.summary import format_duration, format_value, headline, key_metrics, stage_rows


def status(*stages: tuple[str, dict[str, float]]) -> RLHFRunStatus:
    return RLHFRunStatus(
        phase="Succeeded",
        stages=[StageStatus(name=n, phase="Succeeded", metrics=m) for n, m in stages],  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        # PPO measured its starting point itself
        (
            status(
                ("sft", {"task_accuracy": 0.475}),
                ("reward", {"pair_accuracy": 0.99}),
                ("ppo", {"task_accuracy_before": 0.475, "task_accuracy": 0.8083}),
            ),
            "task_accuracy 0.475 -> 0.808",
        ),
        # the comparison's baseline wins over the stage's own number
        (
            status(("ppo", {"task_accuracy_before": 0.4, "eval_task_accuracy_baseline": 0.45, "task_accuracy": 0.8})),
            "task_accuracy 0.45 -> 0.8",
        ),
        # DPO: the SFT stage's accuracy is where it started
        (status(("sft", {"task_accuracy": 0.5}), ("dpo", {"task_accuracy": 0.6})), "task_accuracy 0.5 -> 0.6"),
        # no ground truth: the comparison's mean reward
        (
            status(("sft", {}), ("ppo", {"eval_reward_baseline": -1.16, "eval_reward_final": 4.06})),
            "reward -1.16 -> 4.06",
        ),
        # nothing to compare against
        (status(("sft", {"task_accuracy": 0.5})), None),
        (status(("reward", {"pair_accuracy": 0.9})), None),
        (RLHFRunStatus(), None),
    ],
)
def test_headline(run: RLHFRunStatus, expected: str | None) -> None:
    found = headline(run)
    assert (found.text() if found else None) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0.4, "0s"), (59.6, "1m00s"), (65, "1m05s"), (3600 * 2 + 61, "2h01m")]
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [(600.0, "600"), (0.80833, "0.808"), (3.356, "3.36"), (2e-5, "2e-05")])
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_stage_rows_durations_running_and_key_metrics() -> None:
    now = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)
    run = RLHFRunStatus(
        stages=[
            StageStatus(
                name="sft",
                phase="Succeeded",
                attempts=2,
                start_time="2026-01-01T00:00:00Z",
                completion_time="2026-01-01T00:05:30Z",
                metrics={"train_runtime": 300.0, "eval_loss": 0.3, "task_accuracy": 0.5},
            ),
            StageStatus(name="reward", phase="Running", attempts=1, start_time="2026-01-01T00:06:00Z"),
            StageStatus(name="ppo", phase="Pending"),
        ]
    )
    rows = stage_rows(run, now)
    assert [(r.name, r.attempts, r.seconds) for r in rows] == [
        ("sft", 2, 330.0),
        ("reward", 1, 240.0),
        ("ppo", 0, None),
    ]
    assert rows[0].metrics == (("task_accuracy", 0.5), ("eval_loss", 0.3))
    assert key_metrics("sft", {f"m{i}": 1.0 for i in range(9)}) == ()
