"""PPO math against hand-computed values (rlhf_trainer.ppo.core)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from rlhf_trainer.ppo.core import (
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
    masked_var,
    masked_whiten,
)

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])


def test_gae_matches_hand_computation_with_masked_tail() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0, 99.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, -42.0]])
    advantages, returns = gae(rewards, values, MASK, gamma=0.9, lam=0.8)
    # t=2: delta = 2 + 0.9*0 - 1.5 = 0.5 (episode ends: next value 0)      A2 = 0.5
    # t=1: delta = 0 + 0.9*1.5 - 1.0 = 0.35; A1 = 0.35 + 0.9*0.8*0.5     = 0.71
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4;  A0 = 1.4 + 0.72*0.71         = 1.9112
    torch.testing.assert_close(advantages, torch.tensor([[1.9112, 0.71, 0.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[2.4112, 1.71, 2.0, 0.0]]))


def test_gae_gamma_one_lam_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 0.6]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.8, 0.6, 0.4]]))
    torch.testing.assert_close(returns, torch.ones(1, 3))


def test_kl_penalized_rewards_put_score_on_last_real_token() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 7.0]])
    ref = torch.tensor([[-1.5, -1.5, -0.5, -9.0]])
    rewards, kl = kl_penalized_rewards(torch.tensor([3.0]), logprobs, ref, MASK, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, -0.5, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.05, 3.0, 0.0]]))


def test_clipped_policy_loss_hand_values() -> None:
    logprobs = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1), 5.0]])
    old = torch.tensor([[0.0, 0.0, 0.0, -5.0]])
    advantages = torch.tensor([[1.0, 1.0, -2.0, 1e6]])
    out = clipped_policy_loss(logprobs, old, advantages, MASK, clip_range=0.2)
    # ratio 1.5, A=1:  max(-1.5, -1.2) = -1.2 (clipped)
    # ratio 0.5, A=1:  max(-0.5, -0.8) = -0.5
    # ratio 1.1, A=-2: max(2.2, 2.2)   = 2.2  (inside the clip range)
    assert out.loss.item() == pytest.approx(0.5 / 3, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(1 / 3)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3
    assert out.approx_kl.item() == pytest.approx(expected_kl, rel=1e-5)


def test_clipped_value_loss_hand_values() -> None:
    values = torch.tensor([[1.0, 2.0, 50.0]])
    old = torch.tensor([[0.5, 2.0, -50.0]])
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = clipped_value_loss(values, old, returns, mask, clip_range_value=0.2)
    # token 0: clipped value 0.7 -> (0.7-2)^2 = 1.69 > (1-2)^2 = 1; token 1: 1 and 1.
    assert out.loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2)
    assert out.clip_frac.item() == pytest.approx(0.5)


def test_value_clip_frac_counts_no_token_inside_the_clip_range() -> None:
    """Every new value lies within the clip range (0.2) of its old value: nothing is clipped, so
    the fraction is exactly 0. Independent small values of either sign, where v_old + (v - v_old)
    often rounds to v +- 1 ulp (a rounding coin flip the fraction used to count as a clip)."""
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(8, 64, generator=generator) * 0.03
    values = torch.randn(8, 64, generator=generator) * 0.03
    returns = torch.randn(8, 64, generator=generator)
    assert (values - old).abs().max() < 0.2
    out = clipped_value_loss(values, old, returns, torch.ones(8, 64), clip_range_value=0.2)
    assert out.clip_frac.item() == 0.0
    assert out.loss.item() == pytest.approx(0.5 * ((values - returns) ** 2).mean().item(), rel=1e-6)


def test_entropy_and_logprobs_from_logits() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_from_logits(logits).item() == pytest.approx(expected, rel=1e-6)
    assert logprobs_from_logits(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    uniform = torch.zeros(1, 1, 8)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(8))


def test_masked_statistics() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 1000.0]])
    assert masked_mean(x, MASK).item() == pytest.approx(2.0)
    assert masked_var(x, MASK).item() == pytest.approx(1.0)  # unbiased: ((1)+(0)+(1))/2
    white = masked_whiten(x, MASK)
    assert white[0, 3].item() == 0.0
    assert masked_mean(white, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(white, MASK).item() == pytest.approx(1.0, rel=1e-4)


def test_fixed_kl_controller_never_moves() -> None:
    ctl = FixedKLController(0.3)
    ctl.update(100.0, 1000)
    assert ctl.value == 0.3


def test_adaptive_kl_controller_hand_update() -> None:
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(9.0, n_steps=256)  # error 0.5 clipped to 0.2 -> x(1 + 0.2*256/10000)
    assert ctl.value == pytest.approx(0.2 * 1.00512)
    ctl.update(5.4, n_steps=100)  # error -0.1 -> x(1 - 0.1*100/10000)
    assert ctl.value == pytest.approx(0.2 * 1.00512 * 0.999)
    ctl.update(0.0, n_steps=10000)  # error -1 clipped to -0.2 -> x0.8
    assert ctl.value == pytest.approx(0.2 * 1.00512 * 0.999 * 0.8)
    restored = AdaptiveKLController(1.0, 6.0, 10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_running_moments_match_batch_statistics() -> None:
    moments = RunningMoments()
    data = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, -3.0])
    moments.update(data[:2])
    moments.update(data[2:])
    assert moments.mean == pytest.approx(float(data.mean()))
    assert moments.std == pytest.approx(float(data.std(unbiased=False)), rel=1e-6)


def test_length_sampler_stays_in_range_and_uses_random() -> None:
    sampler = LengthSampler(3, 5)
    random.seed(0)
    first = [sampler() for _ in range(50)]
    random.seed(0)
    assert [sampler() for _ in range(50)] == first
    assert set(first) == {3, 4, 5}
    with pytest.raises(ValueError, match="minNewTokens"):
        LengthSampler(6, 5)


def test_masked_positions_cannot_change_any_loss() -> None:
    """Garbage (even inf/nan) in padded slots leaves rewards, GAE, whitening and losses unchanged."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]).float()
    shape = mask.shape

    def losses(fill: float | None) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        tensors = [torch.randn(shape, generator=g) for _ in range(5)]
        if fill is not None:
            tensors = [torch.where(mask.bool(), t, torch.full_like(t, fill)) for t in tensors]
        logp, ref, old_logp, values, new_values = tensors
        rewards, kl = kl_penalized_rewards(torch.tensor([1.0, -2.0, 0.5]), old_logp, ref, mask, 0.05)
        adv, ret = gae(rewards, values, mask, 0.99, 0.95)
        adv = masked_whiten(adv, mask)
        pg = clipped_policy_loss(logp, old_logp, adv, mask, 0.2)
        vf = clipped_value_loss(new_values, values, ret, mask, 0.2)
        return [kl.sum(), pg.loss, pg.clip_frac, vf.loss, vf.clip_frac]

    reference = losses(None)
    for fill in (0.0, 123.0, float("inf"), float("nan")):
        for got, want in zip(losses(fill), reference, strict=True):
            torch.testing.assert_close(got, want)
