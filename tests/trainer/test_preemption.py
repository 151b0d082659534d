"""SIGTERM mid-run: the stage saves a checkpoint at the step in progress, exits 143 with a
preempted result, and the rerun resumes from exactly that step and trains as if never stopped.

Each scenario runs real `python -m rlhf_trainer <stage>` processes: an uninterrupted reference
(started first, in the background), then a run that gets SIGTERM once it has printed the
progress line of step SIGNAL_AFTER, then the rerun. The step where the first run stopped is
read back from its result.json, never assumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rlhf_api.progress import parse
from rlhf_api.result import EXIT_PREEMPTED, StageResult, read_result
from rlhf_trainer import preemption

from tests.support.processes import subprocess_env

from .stage_helpers import ppo_job, untrained_reward_model, write_config

SIGNAL_AFTER = 4


# ----------------------------------------------------------------------------- the handler modes


@pytest.fixture
def sigterm_handler() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    preemption.install()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        preemption._requested = False


def test_sigterm_in_the_stage_body_stops_at_once(sigterm_handler: None) -> None:
    with pytest.raises(preemption.Preempted) as info, preemption.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000_000):  # the handler runs between bytecodes: this never finishes
            pass
        raise AssertionError("SIGTERM did not interrupt the stage body")
    assert info.value.step is None and "no new checkpoint" in info.value.message


def test_sigterm_in_training_waits_for_the_step_end(sigterm_handler: None) -> None:
    with preemption.interruptible(), preemption.training():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
        assert preemption.stop_agreed()  # single process: the local flag
    assert preemption.requested()


def test_sigterm_outside_the_body_only_records(sigterm_handler: None) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.requested()
    with pytest.raises(preemption.Preempted), preemption.interruptible():
        pass  # a signal that came before the body: it stops before doing anything


# ----------------------------------------------------------------------------- real processes


Spawn = Callable[[list[str], Path], "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start a command (own session, stdout piped, stderr to `log`); whatever still runs at the
    end of the test (a hang) is killed with its children."""
    started: list[subprocess.Popen[str]] = []

    def start(command: list[str], log: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env=subprocess_env(RLHF_TERMINATION_LOG=str(log.with_suffix(".termination"))),
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _stage(stage: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf_trainer", stage, "--config", str(config)]


def _steps(process: subprocess.Popen[str], signal_after: int | None = None) -> dict[int, dict[str, Any]]:
    """Progress events with a step and a loss-like metric, by step; SIGTERM after `signal_after`."""
    assert process.stdout is not None
    events: dict[int, dict[str, Any]] = {}
    for line in process.stdout:
        event = parse(line)
        if event is None or "step" not in event or "event" in event:
            continue
        events.setdefault(event["step"], {}).update(event)
        if signal_after is not None and event["step"] == signal_after:
            process.send_signal(signal.SIGTERM)
            signal_after = None
    process.wait(timeout=240)
    return events


def _preempt_and_resume(
    spawn: Spawn, stage: str, tmp_path: Path, make_config: Any, keys: tuple[str, ...], checkpoint: str
) -> tuple[int, StageResult, StageResult]:
    """Check both attempts against the reference; returns (stop step, reference result, resumed result).

    `checkpoint`: the checkpoint directory name pattern, e.g. "checkpoint-{step}"."""
    reference = spawn(_stage(stage, make_config(tmp_path / "ref.yaml", tmp_path / "ref")), tmp_path / "ref.log")
    config = make_config(tmp_path / "run.yaml", tmp_path / "run")
    first = spawn(_stage(stage, config), tmp_path / "first.log")
    _steps(first, signal_after=SIGNAL_AFTER)
    assert first.returncode == EXIT_PREEMPTED, (tmp_path / "first.log").read_text()[-3000:]
    stopped = read_result(str(tmp_path / "run" / "result.json"))
    assert stopped is not None and stopped.status == "failed" and stopped.preempted
    assert stopped.exit_code == EXIT_PREEMPTED and stopped.steps is not None
    stop = stopped.steps
    assert stopped.message is not None and f"checkpoint saved at step {stop} of" in stopped.message
    # The signal came after step SIGNAL_AFTER's progress line: the stop is that step (PPO checks
    # after printing it) or the one then in progress (the HF Trainer logs after its check).
    assert SIGNAL_AFTER <= stop < stopped.planned_steps  # type: ignore[operator]
    summary = json.loads((tmp_path / "first.termination").read_text())
    assert summary["preempted"] is True and summary["steps"] == stop
    assert (tmp_path / "run" / "checkpoints" / checkpoint.format(step=stop)).is_dir()

    second = spawn(_stage(stage, config), tmp_path / "second.log")
    resumed = _steps(second)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()[-3000:]
    done = read_result(str(tmp_path / "run" / "result.json"))
    assert done is not None and done.status == "succeeded" and done.exit_code == 0
    assert done.resumed_from_step == stop and done.steps == done.planned_steps

    expected = _steps(reference)
    assert reference.returncode == 0, (tmp_path / "ref.log").read_text()[-3000:]
    assert min(resumed) == stop + 1 and max(resumed) == max(expected)
    differences = {key: max(abs(resumed[step][key] - expected[step][key]) for step in resumed) for key in keys}
    print(f"{stage}: stopped at step {stop}; largest |resumed - uninterrupted| per metric: {differences}")
    for step in sorted(resumed):
        for key in keys:
            assert resumed[step][key] == pytest.approx(expected[step][key], rel=1e-4, abs=1e-6), (step, key)
    uninterrupted = read_result(str(tmp_path / "ref" / "result.json"))
    assert uninterrupted is not None and uninterrupted.resumed_from_step is None
    return stop, uninterrupted, done


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sft_sigterm_saves_the_current_step_and_resumes_there(work_dir: str, tmp_path: Path, spawn: Spawn) -> None:
    def make_config(path: Path, out: Path) -> Path:
        # A periodic checkpoint every 4 steps, which the stop must not fall back to.
        training = {"maxSteps": 14, "batchSize": 4, "maxLength": 128, "saveSteps": 4, "evalMaxNewTokens": 2}
        return write_config(path, "sft", work_dir, out, training=training)

    keys = ("loss", "grad_norm", "learning_rate")
    _, uninterrupted, resumed = _preempt_and_resume(spawn, "sft", tmp_path, make_config, keys, "checkpoint-{step}")
    # The same final model: held-out loss and accuracy agree.
    for key in ("eval_loss", "task_accuracy"):
        assert resumed.metrics[key] == pytest.approx(uninterrupted.metrics[key], rel=1e-4), key


@pytest.fixture(scope="module")
def reward_model(work_dir: str) -> str:
    return untrained_reward_model(work_dir)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ppo_sigterm_saves_the_current_step_and_resumes_there(
    work_dir: str, reward_model: str, tmp_path: Path, spawn: Spawn
) -> None:
    prompts = tmp_path / "prompts.jsonl"  # prompts without answers: no held-out evaluation, shorter
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} + {i % 7}?"}) + "\n" for i in range(24)))

    def make_config(path: Path, out: Path) -> Path:
        dataset = {"source": str(prompts)}
        # Periodic checkpoints at 3, 6, 9: a stop at step 4 or 5 is none of them.
        job = ppo_job(work_dir, out, reward_model, dataset, steps=10, miniBatchSize=2, saveSteps=3)
        path.write_text(json.dumps(job.to_file_dict() | {"reportTo": []}))
        return path

    keys = ("reward_mean", "kl", "kl_coef", "policy_loss", "value_loss", "entropy", "response_length")
    _preempt_and_resume(spawn, "ppo", tmp_path, make_config, keys, "step-{step}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_grpo_sigterm_saves_the_current_step_and_resumes_there(work_dir: str, tmp_path: Path, spawn: Spawn) -> None:
    """GRPO samples its completions during training: the resumed run samples the same ones."""

    def make_config(path: Path, out: Path) -> Path:
        # 2 questions x 2 answers per step; periodic checkpoints at 3, 6, 9.
        training = {"maxLength": None, "maxSteps": 10, "batchSize": 4, "numGenerations": 2}
        training |= {"maxCompletionLength": 3, "saveSteps": 3, "learningRate": 0.01, "beta": 0.1}
        rewards = [{"type": "builtin", "builtin": "arithmetic"}]
        return write_config(path, "grpo", work_dir, out, training=training, rewards=rewards)

    keys = ("loss", "reward", "kl", "completions/mean_length")
    _preempt_and_resume(spawn, "grpo", tmp_path, make_config, keys, "checkpoint-{step}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kto_sigterm_saves_the_current_step_and_resumes_there(work_dir: str, tmp_path: Path, spawn: Spawn) -> None:
    """KTO's examples come from shuffled pairs and TRL samples them in order: the resumed run skips
    exactly the batches already trained on and sees the same KL completions."""

    def make_config(path: Path, out: Path) -> Path:
        # Periodic checkpoints at 3, 6, 9: a stop at step 4 or 5 is none of them.
        dataset = {"source": "builtin:arithmetic", "format": "preference", "maxSamples": 64}
        training = {"maxSteps": 10, "batchSize": 4, "saveSteps": 3, "evalMaxNewTokens": 2, "learningRate": 0.001}
        return write_config(path, "kto", work_dir, out, dataset=dataset, training=training)

    keys = ("loss", "grad_norm", "learning_rate", "kl", "rewards/margins")
    _, uninterrupted, resumed = _preempt_and_resume(spawn, "kto", tmp_path, make_config, keys, "checkpoint-{step}")
    for key in ("eval_loss", "task_accuracy"):
        assert resumed.metrics[key] == pytest.approx(uninterrupted.metrics[key], rel=1e-4), key


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker with this RANK (read from /proc; Linux)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(work_dir: str, tmp_path: Path, spawn: Spawn) -> None:
    """Two processes under torchrun; only rank 1 gets SIGTERM (as when one node of a multi-node job
    is drained). Both ranks agree on the step, save their parts of one checkpoint there, and exit;
    nothing hangs."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    training = {"maxSteps": 12, "batchSize": 4, "maxLength": 128, "saveSteps": 100, "evalMaxNewTokens": 2}
    config = write_config(tmp_path / "sft.yaml", "sft", work_dir, tmp_path / "out", training=training)
    process = spawn([*torchrun, "-m", "rlhf_trainer", "sft", "--config", str(config)], tmp_path / "log")
    assert process.stdout is not None
    for line in process.stdout:  # rank 0 prints the progress lines
        event = parse(line)
        if event is not None and event.get("step") == SIGNAL_AFTER and "loss" in event:
            rank1 = _worker_pid(process.pid, 1)
            assert rank1 is not None
            os.kill(rank1, signal.SIGTERM)
    assert process.wait(timeout=240) != 0, (tmp_path / "log").read_text()[-3000:]
    result = read_result(str(tmp_path / "out" / "result.json"))
    assert result is not None and result.preempted and result.exit_code == EXIT_PREEMPTED
    assert result.steps is not None and SIGNAL_AFTER < result.steps < 12
    checkpoint = tmp_path / "out" / "checkpoints" / f"checkpoint-{result.steps}"
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    print(f"sft under torchrun: rank 1 signalled after step {SIGNAL_AFTER}, both stopped at step {result.steps}")
