"""Sampling responses for a batch of prompts, and the masks PPO needs over them.

The sampler is a plain KV-cached decode loop over the policy trunk rather than
`generate()`: every step's hidden state is at hand, so the old log-probs, values and
entropies PPO needs come out of the rollout itself instead of a second full forward pass,
and there is no per-token generation machinery (stopping criteria, output bookkeeping).
Temperature scales the logits in the heads; top-k and top-p filtering are transformers' logits
warpers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .. import distributed as dist
from .core import entropy_from_logits, logprobs_from_logits
from .value_head import ActorCritic, position_ids_for


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
    # From the sampling pass, [B, R] fp32 (None when built by hand): log-probs of the sampled
    # tokens under softmax(logits / temperature), values, and per-token entropies.
    logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    entropy: torch.Tensor | None = None

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


def warpers(sampling: SamplingSettings) -> LogitsProcessorList:
    """Top-k / top-p filtering (temperature is applied to the logits before, by the caller)."""
    out = LogitsProcessorList()
    if sampling.top_k > 0:
        out.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=sampling.top_p))
    return out


@dataclass
class _Sampled:
    tokens: torch.Tensor  # [B, R]
    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor


@torch.no_grad()
def _decode(
    model: ActorCritic,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    lengths: torch.Tensor,
    sampling: SamplingSettings,
    pad_id: int,
    eos_id: int | None,
    synced: bool = False,
) -> _Sampled:
    """KV-cached ancestral sampling; a row stops at eos or its length (later slots: pad).

    synced: the policy is sharded over the processes (FSDP), so every forward pass is a
    collective and all ranks step together until the last rank is done (as generate()'s
    synced_gpus), finished rows carrying pad.
    """
    batch, prompt_width = prompt_ids.shape
    steps = dist.all_reduce_max(int(lengths.max())) if synced else int(lengths.max())
    filters = warpers(sampling)
    trunk, _ = model._policy_parts
    cache = DynamicCache(config=getattr(trunk, "config", None))
    # The whole attention mask up front (each step attends to one more column), no per-step cat.
    mask = torch.cat([prompt_mask, torch.ones_like(prompt_mask[:, :1]).expand(batch, steps)], dim=1)
    positions = position_ids_for(prompt_mask)
    hidden = model.policy_hidden(prompt_ids, prompt_mask, positions, cache=cache)[:, -1:]
    next_position = positions[:, -1:] + 1
    done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    pad = torch.full((batch,), pad_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    tokens, logprobs, values, entropy = [], [], [], []
    for step in range(steps):
        logits, value = model.heads(hidden, sampling.temperature)
        logits = logits[:, -1].float()
        filtered = filters(prompt_ids, logits) if filters else logits  # type: ignore[arg-type]
        token = torch.where(done, pad, torch.multinomial(F.softmax(filtered, dim=-1), 1).squeeze(-1))
        tokens.append(token)
        logprobs.append(logprobs_from_logits(logits, token))
        values.append(value[:, -1])
        entropy.append(entropy_from_logits(logits))
        done = done | (step + 1 >= lengths)
        if eos_id is not None:
            done = done | (token == eos_id)
        if dist.all_reduce_min(int(done.all())) if synced else bool(done.all()):
            break
        width = prompt_width + step + 1
        hidden = model.policy_hidden(token.unsqueeze(-1), mask[:, : width + 1], next_position, cache=cache)
        next_position = next_position + 1
    del cache  # the KV cache is freed here, before scoring and the update
    return _Sampled(*(torch.stack(t, dim=1) for t in (tokens, logprobs, values, entropy)))


def _pad_right(parts: list[torch.Tensor], width: int, value: float) -> torch.Tensor:
    return torch.cat([F.pad(p, (0, width - p.shape[1]), value=value) for p in parts])


@torch.no_grad()
def sample_rollout(
    model: ActorCritic,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    lengths: list[int],
    sampling: SamplingSettings,
    max_prompt_length: int,
    device: torch.device,
    chunk_size: int | None = None,
) -> Rollout:
    """Sample one response per prompt; response i is cut at lengths[i] tokens or at eos.

    Rows are sampled `chunk_size` at a time (all at once by default), so the KV cache and
    activations of generation scale with the chunk, not the batch.
    """
    if len(lengths) != len(prompts):
        raise ValueError("one sampled length per prompt is required")
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, max_prompt_length)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the policy tokenizer has neither a pad nor an eos token")
    eos_id = tokenizer.eos_token_id
    limits = torch.tensor(lengths, dtype=torch.long, device=device)
    # transformers' own flag on a sharded model (set by sharding.shard_layers, read by generate()).
    base = model.policy.get_base_model() if isinstance(model.policy, PeftModel) else model.policy
    synced = dist.is_distributed() and bool(getattr(base, "_is_fsdp_managed_module", False))
    chunks = [
        _decode(model, prompt_ids[rows], prompt_mask[rows], limits[rows], sampling, pad_id, eos_id, synced)
        for rows in torch.arange(len(prompts), device=device).split(chunk_size or len(prompts))
    ]
    width = max(c.tokens.shape[1] for c in chunks)
    responses = _pad_right([c.tokens for c in chunks], width, pad_id).cpu()
    mask = response_mask_for(responses, lengths, eos_id)
    responses = torch.where(mask.bool(), responses, torch.full_like(responses, pad_id))
    token_lists = [row[: int(n)].tolist() for row, n in zip(responses, mask.sum(-1), strict=True)]
    texts = tokenizer.batch_decode(token_lists, skip_special_tokens=True)
    return Rollout(
        prompts=list(prompts),
        input_ids=torch.cat([prompt_ids, responses.to(device)], dim=1),
        attention_mask=torch.cat([prompt_mask, mask.to(device)], dim=1),
        response_start=prompt_ids.shape[1],
        response_mask=mask.to(device),
        responses=texts,
        response_token_ids=token_lists,
        logprobs=_pad_right([c.logprobs for c in chunks], width, 0.0),
        values=_pad_right([c.values for c in chunks], width, 0.0),
        entropy=_pad_right([c.entropy for c in chunks], width, 0.0),
    )
