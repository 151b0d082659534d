"""PPO math: pure tensor functions, no models, no I/O (tested against hand computations).

Tensors are response-aligned: shape [batch, response_len], with a 0/1 `mask` that is 1 on
real response tokens (up to and including eos) and 0 on padding after the response ends.
Masked positions may hold any value; no function here lets them change a result.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    # torch.where, not values * mask: a NaN/inf in a masked slot must not leak (0 * inf = NaN).
    zeroed = torch.where(mask.bool(), values, torch.zeros_like(values))
    return zeroed.sum() if dim is None else zeroed.sum(dim)


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, dim: int | None = None, count: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the unmasked entries (all of them, or along `dim`).

    `count` replaces the number of unmasked entries as the divisor: a micro-batch divides by
    its whole mini-batch's token count, so the micro-batch means add up to the mini-batch mean.
    """
    if count is None:
        count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the unmasked entries; unbiased uses n / (n - 1) (needs n >= 2)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            return torch.zeros_like(var)
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over unmasked entries; masked entries come out 0."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under softmax(logits): [..., V], [...] -> [...], in fp32.

    Never materialises a full-vocabulary log_softmax: fp32 logits give gather - logsumexp;
    lower-precision logits are upcast one sequence at a time (an fp32 copy of [B, T, V] bf16
    logits is twice their size, and it grows with the vocabulary).
    """
    if logits.dim() > 2 and logits.dtype not in (torch.float32, torch.float64):
        return torch.stack([logprobs_from_logits(row, t) for row, t in zip(logits, tokens, strict=True)])
    logits = logits.float()
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position, fp32: logsumexp(z) - sum(p * z)."""
    if logits.dim() > 2 and logits.dtype not in (torch.float32, torch.float64):
        return torch.stack([entropy_from_logits(row) for row in logits])
    logits = logits.float()
    logz = torch.logsumexp(logits, dim=-1, keepdim=True)
    return logz.squeeze(-1) - (torch.exp(logits - logz) * logits).sum(-1)


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards -kl_coef * (logp - ref_logp), plus the score on the last response token.

    Returns (rewards, kl), both zero on masked positions.
    """
    bool_mask = mask.bool()
    kl = torch.where(bool_mask, logprobs - ref_logprobs, torch.zeros_like(logprobs))
    rewards = -kl_coef * kl
    # The last real token of each row; rows are a contiguous prefix of ones.
    last = (mask.long().sum(-1) - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    has_tokens = mask.sum(-1) > 0
    rewards[rows[has_tokens], last[has_tokens]] += scores[has_tokens].to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens. Returns (advantages, returns).

    The episode ends after the last unmasked token (its next value is 0). Masked values and
    rewards are zeroed first, so whatever they held cannot reach a real position.
    """
    bool_mask = mask.bool()
    zeros = torch.zeros_like(values)
    values = torch.where(bool_mask, values, zeros)
    rewards = torch.where(bool_mask, rewards, zeros)
    length = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    reversed_adv = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        reversed_adv.append(last_gae)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    advantages = torch.where(bool_mask, advantages, zeros)
    returns = advantages + values
    return advantages, returns


@dataclass(frozen=True)
class PolicyLossOutput:
    loss: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    token_count: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """PPO surrogate: mean over tokens of max(-A * r, -A * clip(r, 1 - eps, 1 + eps)).

    token_count: divide by this instead of mask.sum() (micro-batches of one mini-batch).
    """
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, count=token_count)
    clip_frac = masked_mean((clipped > unclipped).float(), mask, count=token_count)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask, count=token_count)
    return PolicyLossOutput(loss=loss, clip_frac=clip_frac.detach(), approx_kl=approx_kl.detach())


@dataclass(frozen=True)
class ValueLossOutput:
    loss: torch.Tensor
    clip_frac: torch.Tensor


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
    token_count: torch.Tensor | None = None,
) -> ValueLossOutput:
    """0.5 * mean over tokens of max((v - R)^2, (clip(v, v_old +- eps) - R)^2) (token_count: as above)."""
    # Clamped around v_old directly, not v_old + clamp(v - v_old): inside the range the clamp
    # returns v itself, so the two errors are equal and an unclipped token never counts as clipped
    # (v_old + (v - v_old) rounds to v +- 1 ulp when v and v_old differ in sign or scale, and the
    # comparison then counted a rounding coin flip; same value and gradient otherwise).
    clipped_values = torch.clamp(values, old_values - clip_range_value, old_values + clip_range_value)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask, count=token_count)
    clip_frac = masked_mean((clipped_err > unclipped_err).float(), mask, count=token_count)
    return ValueLossOutput(loss=loss, clip_frac=clip_frac.detach())


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, coef: float) -> None:
        self.value = coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. 2019: move the coefficient proportionally towards a target KL.

    error = clip(kl / target - 1, -0.2, 0.2); coef *= 1 + error * n_steps / horizon.
    """

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        super().__init__(init_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class RunningMoments:
    """Running mean/std of reward scores (Chan et al. parallel update), for normalizeReward."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 1e-24

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, batch: torch.Tensor) -> None:
        n = batch.numel()
        if n == 0:
            return
        batch_mean = float(batch.double().mean())
        batch_var = float(batch.double().var(unbiased=False)) if n > 1 else 0.0
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


class LengthSampler:
    """Uniform response length in [min_tokens, max_tokens], from the (checkpointed) `random` RNG."""

    def __init__(self, min_tokens: int, max_tokens: int) -> None:
        if not 1 <= min_tokens <= max_tokens:
            raise ValueError(f"need 1 <= minNewTokens ({min_tokens}) <= maxNewTokens ({max_tokens})")
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens

    def __call__(self) -> int:
        return random.randint(self.min_tokens, self.max_tokens)
