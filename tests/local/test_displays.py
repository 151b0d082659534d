"""What `rlhf run` prints: plain lines (no TTY) stay few, live bars (TTY) show steps, ETA and rate,
finished stages collapse to a line, and the end-of-run summary has the headline before/after."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rlhf_api.evaluation import EvalSummary, ModelScore, write_eval
from rlhf_api.status import RLHFRunStatus, StageStatus
from rlhf_cli.local.display import PlainDisplay
from rlhf_cli.local.live import LiveDisplay
from rlhf_cli.local.progress_text import describe, headline_numbers, step_of
from rlhf_cli.local.throttle import ProgressThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("event", "position"),
    [
        ({"step": 10, "max_steps": 600, "loss": 1.0}, (10, 600)),
        ({"step": 3, "loss": 1.0}, (3, None)),
        ({"step": 3, "max_steps": -1}, (3, None)),  # HF: -1 when training by epochs
        ({"event": "resume", "checkpoint": "c"}, None),
        ({"loss": 1.0}, None),
    ],
)
def test_step_of(event: dict[str, Any], position: tuple[int, int | None] | None) -> None:
    assert step_of(event) == position


def test_headline_numbers_pick_the_stage_kind_and_skip_summaries() -> None:
    assert headline_numbers({"step": 1, "loss": 0.5, "grad_norm": 2.0, "accuracy": 0.9}) == [
        ("loss", 0.5),
        ("accuracy", 0.9),
    ]
    assert headline_numbers({"reward_mean": 4.0, "kl": 0.1, "kl_coef": 0.5, "entropy": 1.0}) == [
        ("reward_mean", 4.0),
        ("kl", 0.1),
    ]
    assert headline_numbers({"train_runtime": 30.0, "train_loss": 0.7, "step": 600}) == []
    # A step of TRL's RewardTrainer as transformers 5.23 logs it (runtime so far included).
    step = {"stage": "reward", "step": 10, "max_steps": 600, "loss": 0.696, "grad_norm": 0.52, "accuracy": 0.48}
    step |= {"learning_rate": 0.00015, "train_runtime": 0.5414, "train_tokens_per_second": 22459.4}
    assert headline_numbers(step) == [("loss", 0.696), ("accuracy", 0.48), ("learning_rate", 0.00015)]


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (
            {"event": "resume", "checkpoint": "/w/sft/checkpoints/checkpoint-200"},
            "resuming from /w/sft/checkpoints/checkpoint-200",
        ),
        ({"event": "compare", "prompts": 120}, "comparing its starting and trained model on 120 held-out prompts"),
        (
            {
                "event": "compared",
                "eval_win_rate": 0.679,
                "eval_task_accuracy_baseline": 0.475,
                "eval_task_accuracy_final": 0.808,
            },
            "compared: win rate 67.9%, task_accuracy 0.475 -> 0.808",
        ),
        ({"event": "done", "metrics": {}}, None),
        ({"event": "merged", "path": "/x"}, None),
        ({"event": "preempted", "step": 3}, "preempted step=3"),
    ],
)
def test_describe(event: dict[str, Any], text: str | None) -> None:
    assert describe(event) == text


def status(*stages: tuple[str, str], **fields: Any) -> RLHFRunStatus:
    entries = [
        StageStatus(
            name=name,  # type: ignore[arg-type]
            phase=phase,  # type: ignore[arg-type]
            attempts=1 if phase != "Pending" else 0,
            start_time="2026-01-01T00:00:00Z" if phase != "Pending" else None,
            completion_time="2026-01-01T00:00:39Z" if phase in ("Succeeded", "Failed") else None,
            metrics={"task_accuracy": 0.475, "eval_loss": 0.283, "global_step": 600.0} if phase == "Succeeded" else {},
            message="exit code 1: CUDA out of memory" if phase == "Failed" else None,
        )
        for name, phase in stages
    ]
    return RLHFRunStatus(phase=fields.get("phase", "Running"), stages=entries)


def drive(display: Any, clock: Clock | None = None, steps: int = 600, every: int = 10, seconds: float = 0.05) -> None:
    """One stage through the display: starts, logs every `every` steps, ends with the trainer's summary."""
    display.transition(status(("sft", "Running")), [("Normal", "StageStarted", "stage sft started")])
    display.output("sft", "Loading weights: 100%")
    for step in range(every, steps + 1, every):
        if clock is not None:
            clock.now += seconds * every
        display.progress("sft", {"step": step, "max_steps": steps, "loss": 5.0 / step, "learning_rate": 0.001})
    display.progress("sft", {"step": steps, "max_steps": steps, "train_runtime": 30.0, "train_loss": 0.7})
    display.progress("sft", {"event": "done", "metrics": {}})
    display.transition(status(("sft", "Succeeded")), [("Normal", "StageSucceeded", "stage sft succeeded")])


def plain(clock: Clock) -> tuple[io.StringIO, PlainDisplay]:
    out = io.StringIO()
    return out, PlainDisplay(out, ProgressThrottle(every_seconds=60, clock=clock))


def test_plain_lines_are_few_and_carry_eta() -> None:
    clock = Clock()
    out, display = plain(clock)
    drive(display, clock)
    lines = out.getvalue().splitlines()
    progress = [line for line in lines if line.startswith("[sft] step")]
    assert len(progress) == 11  # the first step, then one per 10%
    assert len(lines) <= 15
    assert progress[0] == "[sft] step 10/600 loss=0.5 learning_rate=0.001 | 0s"
    # 20 steps/s on the fake clock: 300 steps left at 50% -> 15 s
    half = next(line for line in progress if "step 300/600" in line)
    assert half.endswith("| 14s, ETA 15s, 20 steps/s")
    assert lines[-1] == "[sft] done: task_accuracy=0.475, eval_loss=0.283"
    assert "Loading weights" not in out.getvalue()  # stage output stays in stage.log


def test_plain_slow_steps_still_print_every_interval() -> None:
    clock = Clock()
    out, display = plain(clock)
    drive(display, clock, steps=1000, every=1, seconds=7.0)  # 7 s a step: 10% takes 11 minutes
    progress = [line for line in out.getvalue().splitlines() if line.startswith("[sft] step")]
    assert 11 < len(progress) <= 11 + 7000 // 60 + 1


def test_plain_events_and_a_retry_starting_over() -> None:
    clock = Clock()
    out, display = plain(clock)
    display.transition(status(("sft", "Running")), [])
    display.progress("sft", {"step": 300, "max_steps": 600, "loss": 1.0})
    display.progress("sft", {"event": "resume", "checkpoint": "/w/sft/checkpoints/checkpoint-300"})
    display.progress("sft", {"event": "merged", "path": "/w/sft/merged"})
    for i in range(12):
        display.output("sft", f"trace line {i}")
    retrying = status(("sft", "Retrying"))
    display.transition(retrying, [("Warning", "StageRetrying", "stage sft attempt 1 failed")])
    text = out.getvalue()
    assert "[sft] resuming from /w/sft/checkpoints/checkpoint-300" in text and "merged" not in text
    assert "warning: stage sft attempt 1 failed" in text
    assert "  | trace line 11" in text and "  | trace line 3" not in text  # the last 8 lines
    display.transition(status(("sft", "Running")), [])
    display.progress("sft", {"step": 310, "max_steps": 600, "loss": 1.0})
    assert out.getvalue().splitlines()[-1].startswith("[sft] step 310/600")  # a new attempt prints again


def write_comparison(root: Path) -> None:
    write_eval(
        root / "eval",
        EvalSummary(
            stage="ppo",
            prompts=120,
            baseline=ModelScore(model="a", task_accuracy=0.475, reward_mean=-1.2, response_length=2),
            candidate=ModelScore(model="b", task_accuracy=0.808, reward_mean=4.1, response_length=2),
            reward_model="rm",
            win_rate=0.679,
            wins=43,
            ties=77,
            losses=0,
            max_new_tokens=8,
        ),
        [],
    )


def final_status() -> RLHFRunStatus:
    run = status(("sft", "Succeeded"), ("reward", "Succeeded"), ("ppo", "Succeeded"), phase="Succeeded")
    run.stages[1].attempts = 2
    run.stages[1].metrics = {"pair_accuracy": 0.992}
    run.stages[2].metrics = {"task_accuracy_before": 0.475, "task_accuracy": 0.8083, "kl": 0.136}
    return run


def test_plain_finish_prints_the_summary_table(tmp_path: Path) -> None:
    write_comparison(tmp_path)
    out = io.StringIO()
    (tmp_path / "report.html").write_text("<html></html>")
    PlainDisplay(out).finish(final_status(), tmp_path)
    text = out.getvalue()
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["sft"], ["reward"], ["ppo"])]
    assert [r[:4] for r in rows] == [
        ["sft", "Succeeded", "1", "39s"],
        ["reward", "Succeeded", "2", "39s"],
        ["ppo", "Succeeded", "1", "39s"],
    ]
    assert "pair_accuracy=0.992" in text
    assert "headline task_accuracy 0.475 -> 0.808" in text
    assert "win rate 67.9% of 120 held-out prompts (43 wins, 77 ties, 0 losses)" in text
    assert "\x1b[" not in text  # no colour codes in logs
    assert (
        text.splitlines()[-1]
        == f"run succeeded. Report: {tmp_path / 'report.html'} (status: {tmp_path / 'report.json'})"
    )


def test_live_display_bars_collapse_and_summary(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    display = LiveDisplay(console)
    display.transition(status(("sft", "Succeeded"), ("ppo", "Pending")), [])  # finished in an earlier run
    display.transition(status(("sft", "Succeeded"), ("ppo", "Running")), [])
    for step in range(1, 41):
        display.progress("ppo", {"step": step, "max_steps": 40, "reward_mean": 0.1 * step, "kl": 0.01})
        if step == 20:
            display.bars.live.refresh()  # type: ignore[union-attr]  # a frame with the bar mid-way
    mid = console.export_text(clear=False)
    assert "ppo" in mid and "20/40 steps" in mid and "ETA" in mid and "steps/s" in mid and "reward_mean=2" in mid
    display.progress("ppo", {"event": "compare", "prompts": 120})
    final = status(("sft", "Succeeded"), ("ppo", "Succeeded"), phase="Succeeded")
    display.transition(final, [])
    write_comparison(tmp_path)
    display.finish(final, tmp_path)
    text = console.export_text()
    assert "✓ sft    succeeded  earlier run  task_accuracy=0.475, eval_loss=0.283" in text
    assert "✓ ppo    succeeded  40/40 steps  39s  task_accuracy=0.475" in text
    assert "[ppo] comparing its starting and trained model on 120 held-out prompts" in text
    assert "win rate 67.9%" in text
    assert display.bars.live is None  # stopped: the cursor is back


def test_live_display_failure_keeps_the_reason_and_output_tail(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    display = LiveDisplay(console)
    display.transition(status(("sft", "Running")), [])
    display.progress("sft", {"step": 5, "max_steps": 600, "loss": 1.0})
    display.output("sft", "RuntimeError: CUDA out of memory")
    failed = status(("sft", "Failed"), phase="Failed")
    display.transition(failed, [("Warning", "StageFailed", "stage sft failed")])
    display.finish(failed, tmp_path)
    text = console.export_text()
    assert "StageFailed: stage sft failed" in text and "run failed" in text
    assert "✗ sft    failed  5/600 steps  39s  exit code 1: CUDA out of memory" in text
    assert "| RuntimeError: CUDA out of memory" in text


def test_live_display_after_ctrl_c_a_late_step_makes_no_new_bar(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    display = LiveDisplay(console)
    display.transition(status(("sft", "Running")), [])
    display.progress("sft", {"step": 31, "max_steps": 200, "loss": 1.0})
    suspended = status(("sft", "Suspended"), phase="Suspended")
    display.transition(suspended, [("Normal", "Suspended", "run suspended")])
    display.progress("sft", {"step": 32, "max_steps": 200, "loss": 1.0})  # the stage's last line, after SIGTERM
    assert display.bars.tasks == {} and not display.bars.progress.tasks
    display.finish(suspended, tmp_path)
    text = console.export_text()
    assert "‖ sft    suspended  31/200 steps" in text and "Run the same command again to resume" in text
