"""Shared helpers for the stage tests: write a stage config, run `rlhf-train` in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rlhf_api.result import StageResult, read_result
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_trainer.__main__ import main

TINY = {"maxSteps": 2, "batchSize": 2, "maxLength": 64, "loggingSteps": 1, "saveSteps": 2, "evalMaxNewTokens": 3}


def write_config(
    path: Path,
    stage: str,
    work_dir: str,
    out: Path,
    model: str = "builtin:tiny-llama",
    dataset: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    **section: Any,
) -> Path:
    config = {
        "stage": stage,
        "runName": "test",
        "model": {"name": model},
        "outputDir": str(out),
        "workDir": work_dir,
        "reportTo": ["tensorboard"],
        stage: {
            "dataset": dataset or {"source": "builtin:arithmetic", "maxSamples": 64},
            # a None value drops a TINY default (e.g. maxLength, which GRPO/RLOO do not have)
            "training": {k: v for k, v in {**TINY, **(training or {})}.items() if v is not None},
            **section,
        },
    }
    path.write_text(yaml.safe_dump(config) if path.suffix == ".yaml" else json.dumps(config))
    return path


def run_stage_cli(stage: str, config: Path) -> tuple[int, StageResult | None]:
    code = main([stage, "--config", str(config)])
    with open(config) as f:
        out = (yaml.safe_load(f) or {}).get("outputDir")
    return code, read_result(str(Path(out) / "result.json")) if out else None


PPO_TINY = {
    "steps": 2,
    "batchSize": 4,
    "miniBatchSize": 4,
    "ppoEpochs": 1,
    "minNewTokens": 2,
    "maxNewTokens": 4,
    "saveSteps": 1,
    "evalMaxNewTokens": 4,
}


def ppo_job(
    work_dir: str, out: Path, reward_path: str, dataset: dict[str, Any] | None = None, **training: Any
) -> TrainerJobConfig:
    """A PPO stage on the builtin tiny Llama (LoRA r4) scored by the model at reward_path."""
    return TrainerJobConfig.model_validate(
        {
            "stage": "ppo",
            "runName": "test",
            "model": {"name": "builtin:tiny-llama"},
            "rewardModel": {"name": reward_path},
            "outputDir": str(out),
            "workDir": work_dir,
            "ppo": {
                "dataset": dataset or {"source": "builtin:arithmetic"},
                "lora": {"r": 4},
                "training": {**PPO_TINY, **training},
            },
        }
    )


def untrained_reward_model(work_dir: str) -> str:
    """An untrained one-output classifier on the builtin tiny Llama, saved under work_dir/reward/merged."""
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = materialize_tiny_llama(work_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    path = Path(work_dir) / "reward" / "merged"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def assert_merged_plain_and_trained(merged_dir: Path, work_dir: str) -> None:
    """A stage on a quantized base merged into a plain full-precision model whose weights moved
    away from the builtin tiny model's (the adapter trained)."""
    import torch
    from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert getattr(merged.config, "quantization_config", None) is None
    base = AutoModelForCausalLM.from_pretrained(materialize_tiny_llama(work_dir))
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    assert q_merged.dtype == torch.float32 and q_merged.shape == q_base.shape
    assert not torch.equal(q_merged, q_base)
