"""One PPO iteration: rollout -> reward -> KL-penalised per-token rewards -> GAE -> PPO epochs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from rlhf_api.stage_config import PPOTrainingConfig
from transformers import PreTrainedTokenizerBase

from . import distributed as dist
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
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate)
        self.kl_ctl = make_kl_controller(cfg)
        self.reward_moments = RunningMoments()
        self.length_sampler = LengthSampler(cfg.min_new_tokens, cfg.max_new_tokens)
        self.sampling = SamplingSettings(cfg.temperature, cfg.top_k, cfg.top_p)
        # Dropout off throughout: the ratio pi/pi_old must be 1 before the first update, and
        # rollout, reference and training passes must see the same function.
        self.model.eval()

    # -- rollout and scoring -----------------------------------------------------------------
    def _logprobs_and_values(
        self, rollout: Rollout, with_grad: bool, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = rollout.input_ids, rollout.attention_mask
        if rows is not None:
            ids, mask = ids[rows], mask[rows]
        with torch.set_grad_enabled(with_grad):
            logits, values = self.model(ids, mask, rollout.response_start)
            logits = logits.float() / self.cfg.temperature
            targets = ids[:, rollout.response_start :]
            return logits, logprobs_from_logits(logits, targets), values.float()

    @torch.no_grad()
    def make_experience(self, rollout: Rollout) -> Experience:
        response_mask = rollout.response_mask
        chunks = torch.arange(len(rollout.prompts)).split(self.cfg.mini_batch_size)
        logprobs, ref_logprobs, values, entropy_sum = [], [], [], torch.zeros(())
        for rows in chunks:
            logits, lp, v = self._logprobs_and_values(rollout, with_grad=False, rows=rows)
            ref_logits = self.model.reference_logits(
                rollout.input_ids[rows], rollout.attention_mask[rows], rollout.response_start
            )
            ref_logits = ref_logits.float() / self.cfg.temperature
            targets = rollout.response_ids[rows]
            logprobs.append(lp)
            ref_logprobs.append(logprobs_from_logits(ref_logits, targets))
            values.append(v)
            entropy_sum = entropy_sum + (entropy_from_logits(logits) * response_mask[rows]).sum()
        logp, ref_logp, vals = torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values)

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
        entropy = float(entropy_sum / response_mask.sum().clamp(min=1))
        return Experience(rollout, raw_scores, logp, ref_logp, vals, advantages, returns, kl, entropy)

    # -- optimisation ------------------------------------------------------------------------
    def update(self, exp: Experience) -> dict[str, float]:
        mask = exp.rollout.response_mask
        batch = mask.shape[0]
        sums: dict[str, float] = {
            "policy_loss": 0.0,
            "value_loss": 0.0,
            "clip_frac": 0.0,
            "approx_kl": 0.0,
            "value_clip_frac": 0.0,
        }
        n_updates = 0
        for _ in range(self.cfg.ppo_epochs):
            for rows in torch.randperm(batch).split(self.cfg.mini_batch_size):
                _, logprobs, values = self._logprobs_and_values(exp.rollout, with_grad=True, rows=rows)
                mb_mask = mask[rows]
                pg = clipped_policy_loss(
                    logprobs, exp.logprobs[rows], exp.advantages[rows], mb_mask, self.cfg.clip_range
                )
                vf = clipped_value_loss(values, exp.values[rows], exp.returns[rows], mb_mask, self.cfg.clip_range_value)
                loss = pg.loss + self.cfg.vf_coef * vf.loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                dist.average_gradients(self.params)
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                self.optimizer.step()
                sums["policy_loss"] += float(pg.loss.detach())
                sums["value_loss"] += float(vf.loss.detach())
                sums["clip_frac"] += float(pg.clip_frac)
                sums["approx_kl"] += float(pg.approx_kl)
                sums["value_clip_frac"] += float(vf.clip_frac)
                n_updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        return {k: v / n_updates for k, v in sums.items()}

    def step(self, prompts: list[str]) -> dict[str, float]:
        """One PPO iteration on this process's prompts; returns stats averaged over processes."""
        started = time.perf_counter()
        lengths = [self.length_sampler() for _ in prompts]
        rollout = sample_rollout(
            self.model.policy,
            self.tokenizer,
            prompts,
            lengths,
            self.sampling,
            self.cfg.max_prompt_length,
            self.device,
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
