"""Several sampled responses per prompt, for the stages that learn from their own samples
(ReST's Grow step, RLAIF's candidate pairs). One generate call per batch of sequences, with
the PPO engine's sampler (left-padded prompts, responses cut at eos)."""

from __future__ import annotations

from typing import Any

import torch
from rlhf_api.sampling_config import SamplingConfig

from .ppo.rollout import SamplingSettings, sample_rollout


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device  # type: ignore[no-any-return]


def sample_responses(
    model: Any, tokenizer: Any, prompts: list[str], n: int, sampling: SamplingConfig
) -> list[list[str]]:
    """`n` responses per prompt (decoded, special tokens dropped), in prompt order."""
    flat = [prompt for prompt in prompts for _ in range(n)]
    settings = SamplingSettings(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    device = model_device(model)
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(flat), sampling.batch_size):
            chunk = flat[start : start + sampling.batch_size]
            rollout = sample_rollout(
                model,
                tokenizer,
                chunk,
                [sampling.max_new_tokens] * len(chunk),
                settings,
                sampling.max_prompt_length,
                device,
            )
            texts += rollout.responses
    finally:
        model.train(was_training)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
