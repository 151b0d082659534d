"""The PPO stage program on the builtin tiny model: outputs, metrics, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .stage_helpers import ppo_job, untrained_reward_model

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(work_dir, path): an untrained one-output classifier on the builtin tiny Llama."""
    work_dir = str(tmp_path_factory.mktemp("run"))
    return work_dir, untrained_reward_model(work_dir)


job = ppo_job


def test_stage_trains_merges_reports_and_resumes(reward_model_dir: tuple[str, str], tmp_path: Path) -> None:
    from rlhf_trainer.stages import ppo
    from transformers import AutoModelForCausalLM

    work_dir, reward_path = reward_model_dir
    out = tmp_path / "ppo"
    result = ppo.run(job(work_dir, out, reward_path))
    assert result.status == "succeeded", result.message
    for key in ("reward_mean", "kl", "kl_coef", "task_accuracy", "task_accuracy_before"):
        assert key in result.metrics, key
    assert 0.0 <= result.metrics["task_accuracy"] <= 1.0
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["status"] == "succeeded"
    assert (on_disk["steps"], on_disk["plannedSteps"], on_disk["exitCode"]) == (2, 2, 0)
    assert "resumedFromStep" not in on_disk
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert any((out / "logs").iterdir())
    assert result.merged_path is not None
    merged = AutoModelForCausalLM.from_pretrained(result.merged_path)
    assert not any("lora" in name for name, _ in merged.named_parameters())

    # Restarted with the same output dir and more steps: continues from step 2.
    again = ppo.run(job(work_dir, out, reward_path, steps=3))
    assert again.status == "succeeded", again.message
    assert again.metrics["resumed_from_step"] == 2
    assert (again.steps, again.planned_steps, again.resumed_from_step) == (3, 3, 2)
    # Measured before training in the first run and carried in the checkpoint.
    assert again.metrics["task_accuracy_before"] == result.metrics["task_accuracy_before"]
    assert (out / "checkpoints" / "step-3").is_dir()


def test_missing_reward_model_fails_naming_the_field(reward_model_dir: tuple[str, str], tmp_path: Path) -> None:
    from rlhf_trainer.stages import ppo

    work_dir, _ = reward_model_dir
    result = ppo.run(job(work_dir, tmp_path / "ppo", str(tmp_path / "no-such-model")))
    assert result.status == "failed"
    assert result.message is not None and result.message.startswith("rewardModel.name:")


@pytest.mark.parametrize("mode", ["4bit-nf4", "8bit"])
def test_stage_runs_on_a_quantized_base(reward_model_dir: tuple[str, str], tmp_path: Path, mode: str) -> None:
    from rlhf_trainer.stages import ppo

    work_dir, reward_path = reward_model_dir
    cfg = job(work_dir, tmp_path / "ppo", reward_path, steps=1)
    assert cfg.ppo is not None
    # A prompt file instead of the builtin task: no held-out evaluation, so the test stays short.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?"}) + "\n" for i in range(8)))
    cfg.ppo.dataset.source = str(prompts)
    cfg.ppo.quantization.mode = mode  # type: ignore[assignment]
    cfg.ppo.quantization.compute_dtype = "float32"
    result = ppo.run(cfg)
    assert result.status == "succeeded", result.message
    assert result.metrics["kl_coef"] > 0
    assert result.merged_path is not None and Path(result.merged_path, "config.json").is_file()
