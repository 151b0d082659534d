"""Several sampled responses per prompt, for the stages that learn from their own samples
(ReST's Grow step, RLAIF's candidate pairs): transformers' generate on left-padded prompts,
a batch of sequences at a time, each response decoded up to its eos."""

from __future__ import annotations

from typing import Any

import torch
from rlhf_api.sampling_config import SamplingConfig
from transformers import GenerationConfig

from .ppo.rollout import tokenize_prompts


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device  # type: ignore[no-any-return]


@torch.no_grad()
def sample_responses(
    model: Any, tokenizer: Any, prompts: list[str], n: int, sampling: SamplingConfig
) -> list[list[str]]:
    """`n` responses per prompt (decoded, special tokens dropped), in prompt order."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    generation = GenerationConfig(
        do_sample=True,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=tokenizer.bos_token_id,
    )
    flat = [prompt for prompt in prompts for _ in range(n)]
    device = model_device(model)
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(flat), sampling.batch_size):
            chunk = flat[start : start + sampling.batch_size]
            ids, mask = tokenize_prompts(tokenizer, chunk, sampling.max_prompt_length)
            ids, mask = ids.to(device), mask.to(device)
            output = model.generate(input_ids=ids, attention_mask=mask, generation_config=generation)
            # after its eos a row holds padding only: both are special tokens, dropped here
            texts += tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
