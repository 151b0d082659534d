"""A run directory as `rlhf run` leaves it, built without torch or training: report.json, each
stage's result.json and TensorBoard event files (written with tensorboard's own writer), and
eval/ (summary and samples)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from rlhf_api.evaluation import EvalSample, EvalSummary, ModelScore, write_eval
from rlhf_api.result import StageResult
from rlhf_api.status import RLHFRunStatus, StageStatus

Points = Sequence[tuple[int, float]]


def write_events(logs: Path, scalars: Mapping[str, Points], wall_start: float = 1_700_000_000.0) -> None:
    """One TensorBoard event file with these scalar series."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logs.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(logs), filename_suffix=f".{int(wall_start)}")
    for tag, points in scalars.items():
        for step, value in points:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(wall_time=wall_start + step, step=step, summary=summary))
    writer.close()


def ramp(start: float, end: float, steps: int = 10, every: int = 10) -> list[tuple[int, float]]:
    return [(every * (i + 1), start + (end - start) * i / (steps - 1)) for i in range(steps)]


SFT_SCALARS = {
    "train/loss": ramp(5.0, 0.3),
    "train/learning_rate": ramp(0.002, 0.0),
    "train/entropy": ramp(5.0, 0.3),
    "train/epoch": ramp(0.1, 1.0),
    "train/train_runtime": [(100, 31.0)],
    "eval/loss": [(100, 0.28)],
}
REWARD_SCALARS = {
    "train/loss": ramp(0.7, 0.01),
    "train/accuracy": ramp(0.5, 1.0),
    "train/mean_reward": ramp(0.0, 0.1),
    "train/margin": ramp(0.0, 12.0),
}
PPO_SCALARS = {
    "ppo/reward_mean": ramp(-1.0, 4.0, every=1),
    "ppo/reward_std": ramp(3.0, 1.0, every=1),
    "ppo/kl": ramp(0.0, 0.3, every=1),
    "ppo/kl_coef": ramp(0.5, 0.5, every=1),
    "ppo/entropy": ramp(0.4, 0.2, every=1),
    "ppo/response_length": ramp(2.0, 2.7, every=1),
    "ppo/policy_loss": ramp(-0.01, -0.005, every=1),
    "ppo/value_loss": ramp(1.0, 0.3, every=1),
}


def make_run(root: Path, with_report_json: bool = True) -> Path:
    stages = {
        "sft": (SFT_SCALARS, {"task_accuracy": 0.475, "eval_loss": 0.283, "train_loss": 0.769}, "21:24:59", "21:25:38"),
        "reward": (REWARD_SCALARS, {"pair_accuracy": 0.992, "train_loss": 0.183}, "21:25:40", "21:26:36"),
        "ppo": (
            PPO_SCALARS,
            {
                "task_accuracy_before": 0.475,
                "task_accuracy": 0.808,
                "reward_mean": 3.36,
                "kl": 0.136,
                "eval_win_rate": 0.679,
                "eval_task_accuracy_baseline": 0.475,
            },
            "21:26:39",
            "21:27:21",
        ),
    }
    status = RLHFRunStatus(phase="Succeeded", current_stage="ppo", message="all stages succeeded")
    for index, (name, (scalars, metrics, start, end)) in enumerate(stages.items()):
        out = root / name
        write_events(out / "logs", scalars, wall_start=1_700_000_000.0 + 100 * index)
        started, finished = f"2026-11-25T{start}Z", f"2026-11-25T{end}Z"
        result = StageResult(
            stage=name,  # type: ignore[arg-type]
            status="succeeded",
            output_path=str(out),
            merged_path=str(out / "merged"),
            metrics=metrics,
            started_at=started,
            finished_at=finished,
        )
        (out / "result.json").write_text(json.dumps(result.to_file_dict()))  # not write_result: no termination log
        status.stages.append(
            StageStatus(
                name=name,  # type: ignore[arg-type]
                phase="Succeeded",
                attempts=2 if name == "reward" else 1,
                start_time=started,
                completion_time=finished,
                metrics=metrics,
            )
        )
    if with_report_json:
        (root / "report.json").write_text(json.dumps(status.to_file_dict()))
    summary = EvalSummary(
        stage="ppo",
        prompts=3,
        baseline=ModelScore(model=str(root / "sft/merged"), reward_mean=-1.2, task_accuracy=1 / 3, response_length=2),
        candidate=ModelScore(model=str(root / "ppo/merged"), reward_mean=4.1, task_accuracy=2 / 3, response_length=2),
        reward_model=str(root / "reward/merged"),
        win_rate=2 / 3,
        wins=1,
        ties=2,
        losses=0,
        max_new_tokens=8,
    )
    samples = [
        EvalSample(prompt="Question: What is 82 + 7?\n\nAnswer: ", reference="89", baseline="89", candidate="89"),
        EvalSample(
            prompt="Question: What is 26 + 8?\n\nAnswer: ",
            reference="34",
            baseline="24 <b>",
            candidate="34",
            baseline_score=-7.5,
            candidate_score=9.26,
            baseline_correct=False,
            candidate_correct=True,
        ),
        EvalSample(prompt="Question: What is 88 + 7?\n\nAnswer: ", reference="95", baseline="85", candidate="85"),
    ]
    write_eval(root / "eval", summary, samples)
    return root


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "quickstart")
