"""Sharded training (placement.strategy: fsdp) with two CPU processes (gloo) under torchrun.

FSDP2 runs on CPU, so the sharded paths are checked here against one process: a TRL stage
through accelerate's FSDP plugin (SFT), and the PPO engine through our own fully_shard, each for
the same losses as one process and a sharded checkpoint that resumes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.result import read_result

from tests.support.processes import subprocess_env
from tests.support.tiny_models import token_share_reward

from .stage_helpers import ppo_job, untrained_reward_model, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
HERE = Path(__file__).parent


def launch(*args: str, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """Run python with `args`, under torchrun when processes > 1; one thread per process on both
    sides (Adam turns float noise in tiny gradients into visible loss differences)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    done = subprocess.run(
        [sys.executable, *launcher, *args], capture_output=True, text=True, env=subprocess_env(), timeout=500, cwd=cwd
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def losses(checkpoint: Path) -> dict[int, float]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def sharded_keys(directory: Path) -> list[str]:
    """The tensors a torch.distributed.checkpoint directory holds."""
    from torch.distributed.checkpoint import FileSystemReader

    return list(FileSystemReader(str(directory)).read_metadata().state_dict_metadata)


def sft_config(
    path: Path, out: Path, max_steps: int, batch_size: int, strategy: str, checkpointing: bool = False
) -> Path:
    # constant lr: the schedule must not depend on maxSteps, which grows on resume
    training = {"maxSteps": max_steps, "saveSteps": 1, "batchSize": batch_size, "lrScheduler": "constant"}
    training["gradientCheckpointing"] = checkpointing
    # no LoRA dropout: its masks come from per-process random streams
    write_config(path, "sft", str(path.parent), out, training=training, lora={"dropout": 0.0})
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "strategy": strategy}))
    return path


def test_sft_under_fsdp_matches_one_process_and_resumes(tmp_path: Path) -> None:
    single = sft_config(tmp_path / "single.yaml", tmp_path / "single", 3, batch_size=4, strategy="ddp")
    launch("-m", "rlhf_trainer", "sft", "--config", str(single), cwd=tmp_path, processes=1)
    want = losses(tmp_path / "single" / "checkpoints" / "checkpoint-3")

    out = tmp_path / "fsdp"
    # 2 processes x batch 2 = the same global batch; first 2 steps, then resume for the third
    launch(
        "-m", "rlhf_trainer", "sft", "--config", str(sft_config(tmp_path / "a.yaml", out, 2, 2, "fsdp")), cwd=tmp_path
    )
    first = losses(out / "checkpoints" / "checkpoint-2")
    # accelerate's FSDP plugin was really on: each rank wrote its shard of the adapter and optimizer
    assert sharded_keys(out / "checkpoints" / "checkpoint-2" / "pytorch_model_fsdp_0")
    # resumed with gradient checkpointing on: the same numbers, and a checkpoint that holds weights
    resume = sft_config(tmp_path / "b.yaml", out, 3, 2, "fsdp", checkpointing=True)
    launch("-m", "rlhf_trainer", "sft", "--config", str(resume), cwd=tmp_path)
    resumed = losses(out / "checkpoints" / "checkpoint-3")
    assert sharded_keys(out / "checkpoints" / "checkpoint-3" / "pytorch_model_fsdp_0")

    print("sft losses: one process", want, "fsdp", first, "resumed", resumed)
    assert first == pytest.approx({k: want[k] for k in (1, 2)}, abs=1e-5)
    assert resumed[3] == pytest.approx(want[3], abs=1e-5)
    result = read_result(str(out / "result.json"))
    assert result is not None and result.status == "succeeded"
    assert result.metrics["resumed_from_step"] == 2 and "task_accuracy" in result.metrics
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "merged") is not None  # gathered, merged, loadable


def test_ppo_engine_under_fsdp_matches_one_process_and_resumes(tmp_path: Path) -> None:
    import torch

    from . import ppo_fsdp_worker as worker

    launch(str(HERE / "ppo_fsdp_worker.py"), str(tmp_path), cwd=tmp_path)
    sharded: dict[str, Any] = json.loads((tmp_path / "fsdp.json").read_text())
    torch.set_num_threads(1)
    tokenizer = worker.tokenizer()
    for name, lora in (("lora", True), ("full", False)):
        model = worker.build(tokenizer, lora)
        engine = worker.PPOEngine(model, tokenizer, token_share_reward(tokenizer), worker.config())
        want = [[s["policy_loss"], s["value_loss"]] for s in worker.two_updates(engine, slice(None))]
        print(name, "losses: one process", want, "fsdp", sharded[name]["losses"])
        for got_step, want_step in zip(sharded[name]["losses"], want, strict=True):
            assert got_step == pytest.approx(want_step, abs=1e-6)
        trained = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        assert sharded[name]["weights"].keys() == trained.keys()
        for key, value in sharded[name]["weights"].items():
            torch.testing.assert_close(torch.tensor(value), trained[key], atol=5e-5, rtol=1e-4)
    resume = json.loads((tmp_path / "resume.json").read_text())
    assert resume["straight"] == resume["resumed"]
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-2" / "state.json").read_text())
    assert state["sharded"] is True and state["world_size"] == 2


def test_ppo_stage_under_fsdp(tmp_path: Path) -> None:
    config = ppo_job(str(tmp_path), tmp_path / "ppo", untrained_reward_model(str(tmp_path))).to_file_dict()
    (tmp_path / "ppo.yaml").write_text(yaml.safe_dump({**config, "strategy": "fsdp"}))
    launch("-m", "rlhf_trainer", "ppo", "--config", str(tmp_path / "ppo.yaml"), cwd=tmp_path)
    result = read_result(str(tmp_path / "ppo" / "result.json"))
    assert result is not None and result.status == "succeeded", result
    assert "task_accuracy" in result.metrics and result.metrics["steps"] == 2
    assert (tmp_path / "ppo" / "merged" / "config.json").is_file()
    state = json.loads((tmp_path / "ppo" / "checkpoints" / "step-2" / "state.json").read_text())
    assert state["sharded"] is True
