"""Sampling responses for a batch of prompts, and the masks PPO needs over them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class Rollout:
    """A batch of prompt + response sequences.

    input_ids/attention_mask: [B, P + R], prompts left-padded to P columns, responses after
    them, right-padded; response_mask: [B, R], 1 on sampled tokens up to and including eos or
    the sampled length limit, 0 after (those slots hold pad ids and attention 0).
    """

    prompts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_start: int
    response_mask: torch.Tensor
    responses: list[str]
    response_token_ids: list[list[int]]

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.response_start :]


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_prompt_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids, truncated from the left (the end of a prompt matters most)."""
    saved = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        batch = tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=max_prompt_length,
            return_tensors="pt",
        )
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved
    return batch["input_ids"], batch["attention_mask"]


def response_mask_for(responses: torch.Tensor, lengths: list[int], eos_token_id: int | None) -> torch.Tensor:
    """1 up to min(sampled length, first eos inclusive) per row, 0 after."""
    batch, width = responses.shape
    limits = torch.tensor(lengths, dtype=torch.long).clamp(max=width)
    if eos_token_id is not None:
        is_eos = responses == eos_token_id
        first_eos = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, width)
        limits = torch.minimum(limits, first_eos)
    columns = torch.arange(width).expand(batch, width)
    return (columns < limits.unsqueeze(-1)).long()


@torch.no_grad()
def sample_rollout(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    lengths: list[int],
    sampling: SamplingSettings,
    max_prompt_length: int,
    device: torch.device,
) -> Rollout:
    """Sample one response per prompt; response i is cut at lengths[i] tokens or at eos."""
    if len(lengths) != len(prompts):
        raise ValueError("one sampled length per prompt is required")
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, max_prompt_length)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the policy tokenizer has neither a pad nor an eos token")
    eos_id = tokenizer.eos_token_id
    generation = GenerationConfig(
        do_sample=True,
        max_new_tokens=max(lengths),
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    output = policy.generate(  # type: ignore[operator]
        input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation
    )
    start = prompt_ids.shape[1]
    responses = output[:, start:].cpu()
    mask = response_mask_for(responses, lengths, eos_id)
    responses = torch.where(mask.bool(), responses, torch.full_like(responses, pad_id))
    token_lists = [row[: int(n)].tolist() for row, n in zip(responses, mask.sum(-1), strict=True)]
    texts = tokenizer.batch_decode(token_lists, skip_special_tokens=True)
    return Rollout(
        prompts=list(prompts),
        input_ids=torch.cat([prompt_ids.cpu(), responses], dim=1).to(device),
        attention_mask=torch.cat([prompt_mask.cpu(), mask], dim=1).to(device),
        response_start=start,
        response_mask=mask.to(device),
        responses=texts,
        response_token_ids=token_lists,
    )
