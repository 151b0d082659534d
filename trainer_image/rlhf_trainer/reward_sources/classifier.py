"""Reward from a one-output sequence classifier (the reward stage's model, or any other)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from rlhf_api.model_config import ModelConfig
from rlhf_api.stage_config import QuantizationConfig

from ..errors import StageError
from ..modeling import load_sequence_classifier, resolve_model_path
from ..ppo.reward_scoring import RewardModelScorer, classifier_score
from .verifiable import completion_text


def _require_one_output(model: ModelConfig, work_dir: str, field: str) -> None:
    """Checked on the config before loading: loading a several-label head as one output fails
    deep in transformers, and a plain causal LM (two labels by default) would score with a
    random head."""
    from transformers import AutoConfig

    path = resolve_model_path(model, work_dir, field)
    try:
        labels = AutoConfig.from_pretrained(path, trust_remote_code=model.trust_remote_code).num_labels
    except (OSError, ValueError) as exc:
        raise StageError(f"{field}.name", f"cannot read the config of '{model.name}': {exc}") from exc
    if labels != 1:
        raise StageError(
            f"{field}.name",
            f"'{model.name}' is not a one-output sequence classifier (its config has {labels} labels); "
            "a reward model from the reward stage has one",
        )


def classifier_reward(
    model: ModelConfig, field: str, work_dir: str, device: torch.device, batch_size: int = 32
) -> Callable[..., list[float | None]]:
    """Scores prompt + response + eos with the classifier in its own tokenizer (as the PPO
    stage does, and as the reward trainer formatted its training pairs).

    TRL's built-in model path scores the text without eos, i.e. not at the position the reward
    stage trained; a callable keeps the two stages consistent.
    """
    _require_one_output(model, work_dir, field)
    classifier, tokenizer = load_sequence_classifier(model, QuantizationConfig(), work_dir, field=field)
    classifier.to(device)  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
    scorer = RewardModelScorer(classifier_score(classifier), tokenizer, batch_size=batch_size, device=device)

    def score(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
        texts = [completion_text(p) for p in prompts]
        responses = [completion_text(c) for c in completions]
        return [float(x) for x in scorer(texts, responses, []).tolist()]

    return score
