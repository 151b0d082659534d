"""`rlhf status -w` and `rlhf logs`, pure: the status's progress read defensively, plain lines
only on change, the laptop's bars drawn from the status, and log lines with their timestamps."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from rich.console import Console
from rlhf_cli.cluster.log_view import BarsLog, LogClock, PlainLog, show_log, split_timestamp
from rlhf_cli.cluster.progress_view import plain_line, run_progress, stage_views, unhealthy
from rlhf_cli.cluster.watch_display import BarsWatch, PlainWatch, follow

NOW = dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=dt.UTC)


def stamp(seconds: float) -> str:
    return (NOW + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def progress(step: int, total: int | None = 600, **metrics: float) -> dict[str, Any]:
    return {
        "step": step,
        "totalSteps": total,
        "percent": 100 * step / total if total else None,
        "stepsPerSecond": 0.5,
        "estimatedCompletionTime": stamp(600),
        "lastProgressTime": stamp(-5),
        "metrics": metrics,
    }


def stage(name: str, phase: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "phase": phase, "attempts": 1, "startTime": stamp(-120), **fields}


def run(*stages: dict[str, Any], phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "namespace": "team"},
        "spec": {"pipeline": ["sft", "reward", "ppo"]},
        "status": {"phase": phase, "stages": list(stages), **status},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (  # progress from an operator that writes it; unknown fields beside it are ignored
            stage("sft", "Running", progress=progress(30, loss=1.25, kl=0.1, grad_norm=3.0), newField=1),
            ("Running", 30, 600, 0.5, (("loss", 1.25), ("kl", 0.1), ("grad_norm", 3.0))),
        ),
        (stage("sft", "Running"), ("Running", None, None, None, ())),  # an operator without progress
        (stage("sft", "Running", progress={"step": "x"}), ("Running", None, None, None, ())),  # garbage
        (stage("sft", "Running", progress=progress(3, None)), ("Running", 3, None, 0.5, ())),  # no total
        (
            stage("sft", "Queued", message="waiting for admission by Kueue queue gpus"),
            ("Queued", None, None, None, ()),
        ),
    ],
)
def test_stage_views_read_the_progress_defensively(raw: dict[str, Any], expected: tuple[Any, ...]) -> None:
    (view,) = stage_views(run(raw))
    assert (view.phase, view.step, view.total, view.rate, view.numbers) == expected
    assert view.entry.name == "sft" and view.entry.attempts == 1


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            stage("sft", "Running", progress=progress(30, loss=1.25, kl=0.1)),
            "[sft] step 30/600 loss=1.25 kl=0.1 | 2m00s, ETA 10m00s, 0.5 steps/s",
        ),
        (stage("sft", "Running", progress=progress(3, None)), "[sft] step 3 | 2m00s, ETA 10m00s, 0.5 steps/s"),
        (stage("sft", "Running"), "[sft] starting"),
        (stage("sft", "Running", attempts=2), "[sft] starting (attempt 2)"),
        (
            stage("sft", "Queued", message="waiting for admission by Kueue queue gpus"),
            "[sft] queued: waiting for admission by Kueue queue gpus",
        ),
        (stage("sft", "Queued"), "[sft] queued: waiting for admission"),
        (stage("sft", "Retrying", message="OOMKilled"), "[sft] attempt 1 failed: OOMKilled; retrying"),
        (
            stage("sft", "Succeeded", completionTime=stamp(0), metrics={"train_loss": 0.5, "other": 1.0}),
            "[sft] done in 2m00s: train_loss=0.5",
        ),
        (
            stage("sft", "Failed", message="exit code 1: CUDA out of memory"),
            "[sft] failed: exit code 1: CUDA out of memory",
        ),
        (stage("sft", "Skipped"), "[sft] skipped"),
        (stage("sft", "Pending"), None),
    ],
)
def test_plain_line(raw: dict[str, Any], line: str | None) -> None:
    (view,) = stage_views(run(raw))
    assert plain_line(view, NOW) == line


def test_run_progress_and_health() -> None:
    two = (stage("sft", "Succeeded"), stage("reward", "Running"), stage("ppo", "Pending"))
    assert run_progress(run(*two)) == "1/3 stages"
    assert run_progress(run(*two, progress="1/3 stages (reward 40%)")) == "1/3 stages (reward 40%)"
    healthy = {"type": "Healthy", "status": "True", "reason": "GuardsPass"}
    tripped = {"type": "Healthy", "status": "False", "reason": "KLTooHigh", "message": "kl 0.4 > maxKL 0.2"}
    assert unhealthy(run(*two, conditions=[healthy])) == []
    assert unhealthy(run(*two, conditions=[tripped])) == [("KLTooHigh", "kl 0.4 > maxKL 0.2")]


def test_plain_watch_prints_a_line_only_when_something_changed() -> None:
    out = io.StringIO()
    watch = PlainWatch(out, now=lambda: NOW)
    sft = stage("sft", "Running", progress=progress(30, loss=1.25))
    watch.show(run(sft, stage("reward", "Pending")))
    watch.show(run(dict(sft, progress=dict(sft["progress"], lastProgressTime=stamp(0))), stage("reward", "Pending")))
    watch.show(run(stage("sft", "Running", progress=progress(60, loss=1.0)), stage("reward", "Pending")))
    tripped = {"type": "Healthy", "status": "False", "reason": "KLTooHigh", "message": "kl 0.4 > maxKL 0.2"}
    done = stage("sft", "Succeeded", completionTime=stamp(0), metrics={"train_loss": 0.5})
    watch.show(
        run(done, stage("reward", "Queued", message="waiting for admission by Kueue queue gpus"), conditions=[tripped])
    )
    watch.show(
        run(done, stage("reward", "Queued", message="waiting for admission by Kueue queue gpus"), conditions=[tripped])
    )
    final = run(done, stage("reward", "Succeeded", metrics={"pair_accuracy": 0.99}), phase="Succeeded")
    watch.show(final)
    watch.close(final)
    assert out.getvalue().splitlines() == [
        "RLHFRun team/demo (sft -> reward -> ppo)",
        "run running, 0/2 stages",
        "[sft] step 30/600 loss=1.25 | 2m00s, ETA 10m00s, 0.5 steps/s",
        "[sft] step 60/600 loss=1 | 2m00s, ETA 10m00s, 0.5 steps/s",
        "run running, 1/2 stages",
        "warning: unhealthy: KLTooHigh: kl 0.4 > maxKL 0.2",
        "[sft] done in 2m00s: train_loss=0.5",
        "[reward] queued: waiting for admission by Kueue queue gpus",
        "[reward] done: pair_accuracy=0.99",
        "run succeeded",
    ]


def test_bars_watch_draws_the_status_as_the_laptop_display() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    watch = BarsWatch(console, now=lambda: NOW)
    earlier = stage("sft", "Succeeded", completionTime=stamp(-60), metrics={"task_accuracy": 0.475})
    watch.show(run(earlier, stage("reward", "Queued", message="waiting for admission by Kueue queue gpus")))
    watch.bars.live.refresh()  # type: ignore[union-attr]
    queued = console.export_text(clear=False)
    assert "✓ sft    succeeded  1m00s  task_accuracy=0.475" in queued
    assert "queued: waiting for admission by Kueue queue gpus" in queued
    running = stage("reward", "Running", progress=progress(300, loss=0.5, accuracy=0.875))
    watch.show(run(earlier, running))
    watch.bars.live.refresh()  # type: ignore[union-attr]
    frame = console.export_text(clear=False).split("task_accuracy=0.475")[-1]
    # steps done/total, elapsed since the stage started, the operator's ETA and rate, the numbers
    for part in ("300/600 steps", "0:02:00", "ETA", "0:10:00", "0.5 steps/s", "loss=0.5 accuracy=0.875"):
        assert part in frame, part
    final = run(earlier, stage("reward", "Succeeded", completionTime=stamp(0), metrics={"pair_accuracy": 0.99}))
    final["status"]["phase"] = "Succeeded"
    assert follow([final], watch) == 0
    text = console.export_text()
    assert "✓ reward succeeded  300/600 steps  2m00s  pair_accuracy=0.99" in text
    assert text.rstrip().endswith("run succeeded") and watch.bars.live is None


def test_follow_ends_with_the_run() -> None:
    out = io.StringIO()
    failed = run(stage("sft", "Failed", message="OOMKilled"), phase="Failed", message="stage sft failed: OOMKilled")
    later = run(stage("sft", "Succeeded"), phase="Succeeded")
    assert follow(iter([run(stage("sft", "Running")), failed, later]), PlainWatch(out, now=lambda: NOW)) == 1
    assert out.getvalue().splitlines()[-2:] == ["[sft] failed: OOMKilled", "run failed: stage sft failed: OOMKilled"]

    def interrupted() -> Any:
        yield run(stage("sft", "Running"))
        raise KeyboardInterrupt

    assert follow(interrupted(), PlainWatch(io.StringIO())) == 130


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2026-12-06T12:00:00.123456789Z loss went down", (NOW.timestamp() + 0.123456, "loss went down")),
        ("2026-12-06T13:00:00+01:00 x", (NOW.timestamp(), "x")),
        ("2026-12-06T12:00:00Z ", (NOW.timestamp(), "")),
        ("no stamp here", (None, "no stamp here")),
        ("2026-13-45T12:00:00Z bad date", (None, "2026-13-45T12:00:00Z bad date")),
    ],
)
def test_split_timestamp(line: str, expected: tuple[float | None, str]) -> None:
    when, text = split_timestamp(line)
    assert text == expected[1]
    assert when == pytest.approx(expected[0]) if expected[0] is not None else when is None


def log(seconds: float, text: str) -> str:
    return f"{stamp(seconds)} {text}"


LOG = [
    log(0, "loading model"),
    log(10, '@@rlhf {"stage":"sft","step":1,"max_steps":100,"loss":2.0}'),
    log(20, '@@rlhf {"stage":"sft","step":11,"max_steps":100,"loss":1.5}'),
    log(21, '@@rlhf {"stage":"sft","step":12,"max_steps":100,"loss":1.5}'),
    log(60, '@@rlhf {"stage":"sft","step":51,"max_steps":100,"loss":1.0}'),
    log(61, "a line of its own"),
    log(70, '@@rlhf {"stage":"sft","event":"resume","checkpoint":"/w/ckpt-50"}'),
    log(110, '@@rlhf {"stage":"sft","event":"done","metrics":{"train_loss":0.5}}'),
]


def test_plain_log_turns_events_into_progress_text_at_the_log_times() -> None:
    out = io.StringIO()
    clock = LogClock()
    show_log(LOG, "sft", PlainLog(out, clock), clock)  # read at once: the times are the log's
    assert out.getvalue().splitlines() == [
        "loading model",
        "[sft] step 1/100 loss=2 | 0s",
        "[sft] step 11/100 loss=1.5 | 10s, ETA 1m29s, 1 steps/s",
        "[sft] step 51/100 loss=1 | 50s, ETA 49s, 1 steps/s",
        "a line of its own",
        "[sft] resuming from /w/ckpt-50",
        "[sft] done: train_loss=0.5",
    ]


def test_bars_log_shows_a_bar_and_collapses_it_when_done() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    clock = LogClock()
    view = BarsLog(console, clock)
    show_log(LOG[:5], "sft", view, clock)
    assert view.bars.live is None  # the stream ended: the display is put away
    mid = console.export_text(clear=False)
    for part in ("loading model", "51/100 steps", "ETA 0:00:49", "1 steps/s", "loss=1"):  # the log's own rate
        assert part in mid, part
    show_log(LOG[5:], "sft", view, clock)
    text = console.export_text()
    assert "a line of its own" in text and "[sft] resuming from /w/ckpt-50" in text
    assert "✓ sft    succeeded  51/100 steps  train_loss=0.5" in text


def test_bars_watch_says_a_retry_and_a_tripped_guard_once() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    watch = BarsWatch(console, now=lambda: NOW)
    tripped = {"type": "Healthy", "status": "False", "reason": "GuardTripped", "message": "kl 0.4 above maxKL 0.2"}
    running = stage("ppo", "Running", progress=progress(30, reward_mean=0.5, kl=0.4))
    for _ in range(2):
        watch.show(run(running, conditions=[tripped]))
    retrying = stage("ppo", "Retrying", message="no progress event for 1800s (StageStalled)")
    for _ in range(2):
        watch.show(run(retrying))
    watch.show(run(dict(running, attempts=2, progress=progress(3, reward_mean=0.1))))
    watch.close(None)
    text = console.export_text()
    assert text.count("Unhealthy: GuardTripped: kl 0.4 above maxKL 0.2") == 1
    assert text.count("↻ ppo attempt 1 failed: no progress event for 1800s (StageStalled)") == 1
    assert "3/600 steps" in text.splitlines()[-1]  # the new attempt's bar, from its own progress
