"""Shared helpers for the stage tests: write a stage config, run `rlhf-train` in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rlhf_api.result import StageResult, read_result
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
            "training": {**TINY, **(training or {})},
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


def tiny_reward_model(work_dir: Path) -> str:
    """An untrained one-output classifier on the builtin tiny Llama, saved under work_dir: what
    the PPO stage needs as its reward model."""
    from rlhf_trainer.builtin import materialize_tiny_llama
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = materialize_tiny_llama(str(work_dir))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    path = work_dir / "reward" / "merged"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# Two short PPO steps on the builtin task: rollout, update, checkpoint each step.
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


def ppo_config(work_dir: str, out: Path, reward_path: str, **section: Any) -> dict[str, Any]:
    """A PPO stage config (file form) on the builtin tiny Llama with LoRA r4; `section` overrides."""
    return {
        "stage": "ppo",
        "runName": "test",
        "model": {"name": "builtin:tiny-llama"},
        "rewardModel": {"name": reward_path},
        "outputDir": str(out),
        "workDir": work_dir,
        "ppo": {"dataset": {"source": "builtin:arithmetic"}, "lora": {"r": 4}, "training": PPO_TINY, **section},
    }
