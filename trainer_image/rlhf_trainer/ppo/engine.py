"""One PPO iteration: rollout -> reward -> KL-penalised per-token rewards -> GAE -> PPO epochs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from rlhf_api.stages.ppo import PPOTrainingConfig
from transformers import PreTrainedTokenizerBase

from .. import distributed as dist
from .core import (
    AdaptiveKLController,
    FixedKLController,
    LengthSampler,
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from .rollout import Rollout, SamplingSettings, sample_rollout
from .value_head import ActorCritic

# (prompts, response texts, response token ids) -> one score per sample, shape [B].
RewardFn = Callable[[list[str], list[str], list[list[int]]], torch.Tensor]


@dataclass
class Experience:
    """A rollout with everything the update needs, all response-aligned [B, R] (scores [B])."""

    rollout: Rollout
    scores: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor
    entropy: float


STAT_KEYS = ("policy_loss", "value_loss", "clip_frac", "approx_kl", "value_clip_frac")


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, fused where torch has a fused kernel for these tensors (CPU and CUDA, float
    dtypes): the per-tensor path costs ~20% of a full fine-tuning update on CPU."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def make_kl_controller(cfg: PPOTrainingConfig) -> FixedKLController:
    if cfg.kl.adaptive:
        return AdaptiveKLController(cfg.kl.init_coef, cfg.kl.target, cfg.kl.horizon)
    return FixedKLController(cfg.kl.init_coef)


class PPOEngine:
    def __init__(
        self,
        model: ActorCritic,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        cfg: PPOTrainingConfig,
        device: torch.device | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.cfg = cfg
        self.device = device or torch.device("cpu")
        self.params = model.trainable_parameters()
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        dist.broadcast_parameters(self.params)
        self.optimizer = make_optimizer(self.params, cfg.learning_rate)
        self.kl_ctl = make_kl_controller(cfg)
        self.reward_moments = RunningMoments()
        self.length_sampler = LengthSampler(cfg.min_new_tokens, cfg.max_new_tokens)
        self.sampling = SamplingSettings(cfg.temperature, cfg.top_k, cfg.top_p)
        self.micro_batch_size = cfg.micro_batch_size or cfg.mini_batch_size
        self.rollout_batch_size = cfg.rollout_batch_size or cfg.batch_size
        if cfg.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        # Dropout stays off throughout (ActorCritic disables it): the ratio pi/pi_old must be 1
        # before the first update, and rollout, reference and training passes must see the
        # same function.

    # -- rollout and scoring -----------------------------------------------------------------
    def policy_pass(self, rollout: Rollout, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits / temperature, log-probs of the response tokens, values) for some rows;
        with gradients when grad mode is on."""
        ids, mask = rollout.input_ids[rows], rollout.attention_mask[rows]
        logits, values = self.model(ids, mask, rollout.response_start, self.cfg.temperature)
        return logits, logprobs_from_logits(logits, ids[:, rollout.response_start :]), values

    def _chunks(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Rows for the no-grad passes over the rollout: micro-batches, so that they never hold
        more than a training pass does (their [rows, R, V] logits included)."""
        return torch.arange(batch, device=self.device).split(self.micro_batch_size)

    @torch.no_grad()
    def old_policy(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probs, values, entropies) of the policy that sampled the rollout: from the
        sampling pass itself when it recorded them, else from one more forward pass."""
        if rollout.logprobs is not None and rollout.values is not None and rollout.entropy is not None:
            return rollout.logprobs, rollout.values, rollout.entropy
        parts = []
        for rows in self._chunks(len(rollout.prompts)):
            logits, logprobs, values = self.policy_pass(rollout, rows)
            parts.append((logprobs, values, entropy_from_logits(logits)))
        logprobs, values, entropy = (torch.cat(t) for t in zip(*parts, strict=True))
        return logprobs, values, entropy

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        parts = []
        for rows in self._chunks(len(rollout.prompts)):
            logits = self.model.reference_logits(
                rollout.input_ids[rows], rollout.attention_mask[rows], rollout.response_start, self.cfg.temperature
            )
            parts.append(logprobs_from_logits(logits, rollout.response_ids[rows]))
            del logits
        return torch.cat(parts)

    @torch.no_grad()
    def make_experience(self, rollout: Rollout) -> Experience:
        response_mask = rollout.response_mask
        logp, vals, entropies = self.old_policy(rollout)
        ref_logp = self.reference_logprobs(rollout)

        raw_scores = self.reward_fn(rollout.prompts, rollout.responses, rollout.response_token_ids)
        raw_scores = raw_scores.detach().float().reshape(-1).to(self.device)
        if raw_scores.shape[0] != len(rollout.prompts):
            raise ValueError(
                f"reward function returned {raw_scores.shape[0]} scores for {len(rollout.prompts)} samples"
            )
        scores = raw_scores - self.cfg.reward_baseline
        if self.cfg.normalize_reward:
            self.reward_moments.update(dist.all_gather_cat(scores))
            scores = scores / max(self.reward_moments.std, 1e-8)

        rewards, kl = kl_penalized_rewards(scores, logp, ref_logp, response_mask, self.kl_ctl.value)
        advantages, returns = gae(rewards, vals, response_mask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = masked_whiten(advantages, response_mask)
        entropy = float(masked_mean(entropies, response_mask))
        return Experience(rollout, raw_scores, logp, ref_logp, vals, advantages, returns, kl, entropy)

    # -- optimisation ------------------------------------------------------------------------
    def mini_batch_gradients(self, exp: Experience, rows: torch.Tensor) -> dict[str, float]:
        """Accumulate the gradients of one mini-batch's PPO loss, micro-batch by micro-batch.

        Each micro-batch's token means are divided by the whole mini-batch's token count, so
        the accumulated gradient (and the stats) equal one pass over the mini-batch.
        """
        mask = exp.rollout.response_mask
        tokens = mask[rows].sum()
        stats = dict.fromkeys(STAT_KEYS, 0.0)
        for micro in rows.split(self.micro_batch_size):
            with self.model.training_pass():
                _, logprobs, values = self.policy_pass(exp.rollout, micro)
            mb_mask = mask[micro]
            pg = clipped_policy_loss(
                logprobs, exp.logprobs[micro], exp.advantages[micro], mb_mask, self.cfg.clip_range, tokens
            )
            vf = clipped_value_loss(
                values, exp.values[micro], exp.returns[micro], mb_mask, self.cfg.clip_range_value, tokens
            )
            (pg.loss + self.cfg.vf_coef * vf.loss).backward()
            for key, value in zip(STAT_KEYS, (pg.loss, vf.loss, pg.clip_frac, pg.approx_kl, vf.clip_frac), strict=True):
                stats[key] += float(value.detach())
        return stats

    def optimizer_step(self) -> None:
        """Average gradients over processes, clip, step: the one place parameters change."""
        dist.average_gradients(self.params)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def update(self, exp: Experience) -> dict[str, float]:
        batch = exp.rollout.response_mask.shape[0]
        sums = dict.fromkeys(STAT_KEYS, 0.0)
        n_updates = 0
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(self.cfg.ppo_epochs):
            for rows in torch.randperm(batch).split(self.cfg.mini_batch_size):
                stats = self.mini_batch_gradients(exp, rows.to(self.device))
                self.optimizer_step()
                for key, value in stats.items():
                    sums[key] += value
                n_updates += 1
        return {k: v / n_updates for k, v in sums.items()}

    def step(self, prompts: list[str]) -> dict[str, float]:
        """One PPO iteration on this process's prompts; returns stats averaged over processes."""
        started = time.perf_counter()
        lengths = [self.length_sampler() for _ in prompts]
        rollout = sample_rollout(
            self.model,
            self.tokenizer,
            prompts,
            lengths,
            self.sampling,
            self.cfg.max_prompt_length,
            self.device,
            self.rollout_batch_size,
        )
        generated = time.perf_counter()
        exp = self.make_experience(rollout)
        scored = time.perf_counter()
        kl_coef = self.kl_ctl.value
        train_stats = self.update(exp)
        updated = time.perf_counter()

        mask = rollout.response_mask.float()
        all_scores = dist.all_gather_cat(exp.scores)
        local = torch.tensor(
            [
                float(exp.kl.sum(-1).mean()),
                float(mask.sum(-1).mean()),
                exp.entropy,
                *train_stats.values(),
            ]
        )
        reduced = dist.all_reduce_mean(local).tolist()
        seq_kl, response_length, entropy = reduced[:3]
        train = dict(zip(train_stats.keys(), reduced[3:], strict=True))
        # The controller sees the KL of the policy that generated this batch.
        self.kl_ctl.update(seq_kl, n_steps=int(all_scores.numel()))
        elapsed = time.perf_counter() - started
        return {
            "reward_mean": float(all_scores.mean()),
            "reward_std": float(all_scores.std()) if all_scores.numel() > 1 else 0.0,
            "kl": seq_kl,
            "kl_coef": kl_coef,
            "entropy": entropy,
            "response_length": response_length,
            "tokens_per_s": response_length * all_scores.numel() / max(elapsed, 1e-9),
            "step_seconds": elapsed,
            "rollout_seconds": generated - started,
            "experience_seconds": scored - generated,
            "update_seconds": updated - scored,
            **train,
        }

    # -- state for checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
