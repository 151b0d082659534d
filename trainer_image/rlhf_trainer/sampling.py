"""Several sampled responses per prompt, for the stages that learn from their own samples
(ReST's Grow step, RLAIF's candidate pairs): the generation loop (`generation`) on left-padded
prompts truncated from the left, a batch of sequences at a time, each response decoded up to
its eos."""

from __future__ import annotations

from typing import Any

import torch
from rlhf_api.sampling_config import SamplingConfig
from transformers import GenerationConfig

from .generation import generate_texts
from .ppo.rollout import tokenize_prompts


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

    def encode(chunk: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = tokenize_prompts(tokenizer, chunk, sampling.max_prompt_length)
        return {"input_ids": ids, "attention_mask": mask}

    texts = generate_texts(model, tokenizer, flat, sampling.batch_size, encode, generation_config=generation)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
