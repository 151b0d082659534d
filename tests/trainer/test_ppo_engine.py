"""The PPO engine on tiny models: reference pass, masking, rollout, resume, learning."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rlhf_api.stages.ppo import PPOTrainingConfig
from rlhf_trainer.ppo.checkpoint import latest_checkpoint
from rlhf_trainer.ppo.core import logprobs_from_logits
from rlhf_trainer.ppo.engine import PPOEngine
from rlhf_trainer.ppo.loop import prompts_for_step, train_loop
from rlhf_trainer.ppo.rollout import Rollout, response_mask_for
from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead

from tests.support.tiny_models import tiny_llama, token_share_reward, word_tokenizer

WORDS = [f"w{i}" for i in range(20)]
PROMPTS = [" ".join(WORDS[i : i + 1 + i % 3]) for i in range(12)]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return word_tokenizer(WORDS)


def build_model(tokenizer, seed: int = 0, init: float = 0.2) -> ActorCritic:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    base = tiny_llama(len(tokenizer), initializer_range=init)
    policy = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    return ActorCritic(policy, ValueHead(base.config.hidden_size))


def config(**overrides: object) -> PPOTrainingConfig:
    values: dict[str, object] = {
        "steps": 4,
        "batch_size": 8,
        "mini_batch_size": 4,
        "ppo_epochs": 2,
        "learning_rate": 1e-2,
        "min_new_tokens": 3,
        "max_new_tokens": 5,
        "save_steps": 2,
        "kl": {"adaptive": True, "initCoef": 0.05, "target": 1.0, "horizon": 100},
    }
    values.update(overrides)
    return PPOTrainingConfig.model_validate(values)


def perturb_adapter(model: ActorCritic) -> None:
    """Give the LoRA weights non-zero B so the adapted policy differs from the base."""
    with torch.no_grad():
        for name, p in model.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


def test_reference_logprobs_equal_base_model(tokenizer) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    base = tiny_llama(len(tokenizer), initializer_range=0.2)
    frozen_copy = copy.deepcopy(base).eval()
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    model = ActorCritic(policy, ValueHead(base.config.hidden_size)).eval()
    perturb_adapter(model)

    batch = tokenizer(["w1 w2 w3 w4", "w5 w6"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    start = 2
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = frozen_copy(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        ref_logits = model.reference_logits(ids, mask, start)
        policy_logits, values = model(ids, mask, start)
    expected = expected[:, start - 1 : -1]
    targets = ids[:, start:]
    # Same weights, other shapes: the reference pass drops the last token and runs the head on the
    # response part only, so its matrix products may sum in another order (the kernel's blocking
    # depends on the shapes, the thread count and the CPU): equal up to rounding, not bitwise.
    # Bound: a sum of n terms is off by at most n * eps of its terms' magnitude; the longest chain
    # of sums per layer is q/k/v (hidden), attention (positions), o_proj (hidden) and down_proj
    # (intermediate), then the head (hidden). The live adapter moves logits by far more (below).
    cfg = base.config
    terms = cfg.num_hidden_layers * (2 * cfg.hidden_size + ids.shape[1] + cfg.intermediate_size) + cfg.hidden_size
    atol = terms * torch.finfo(torch.float32).eps * float(expected.abs().max())
    torch.testing.assert_close(ref_logits, expected, rtol=0.0, atol=atol)
    # log_softmax moves by at most twice the largest logit difference (logsumexp is 1-Lipschitz).
    torch.testing.assert_close(
        logprobs_from_logits(ref_logits, targets), logprobs_from_logits(expected, targets), rtol=0.0, atol=2 * atol
    )
    # The adapter is live outside the context manager (so the test above can fail).
    assert not torch.allclose(policy_logits, expected, rtol=0.0, atol=100 * atol), (atol, policy_logits - expected)
    assert values.shape == targets.shape


def test_response_mask_stops_at_eos_and_sampled_length() -> None:
    eos = 2
    responses = torch.tensor([[5, 6, 2, 7, 8], [5, 6, 7, 8, 9], [2, 5, 5, 5, 5]])
    mask = response_mask_for(responses, lengths=[5, 3, 4], eos_token_id=eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]


def test_rollout_pads_after_eos_and_respects_lengths(tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = build_model(tokenizer)
    engine = PPOEngine(model, tokenizer, token_share_reward(tokenizer), config())
    torch.manual_seed(3)
    from rlhf_trainer.ppo.rollout import SamplingSettings, sample_rollout

    lengths = [1, 2, 3, 4, 5, 5]
    rollout = sample_rollout(model, tokenizer, PROMPTS[:6], lengths, SamplingSettings(top_k=5), 64, engine.device)
    real = rollout.response_mask.sum(-1).tolist()
    assert all(1 <= n <= limit for n, limit in zip(real, lengths, strict=True))
    pad = tokenizer.pad_token_id
    for row, n in zip(rollout.response_ids, real, strict=True):
        assert (row[n:] == pad).all()
        assert tokenizer.eos_token_id not in row[: n - 1].tolist()
    # prompts are left-padded: attention 0 exactly on pad columns of the prompt part
    prompt_part = rollout.attention_mask[:, : rollout.response_start]
    assert torch.equal(prompt_part.bool(), rollout.input_ids[:, : rollout.response_start] != pad)


def _loss_on(engine: PPOEngine, rollout: Rollout) -> list[float]:
    exp = engine.make_experience(rollout)
    with torch.no_grad():
        _, logprobs, values = engine.policy_pass(rollout, torch.arange(2))
    from rlhf_trainer.ppo.core import clipped_policy_loss, clipped_value_loss

    mask = rollout.response_mask
    pg = clipped_policy_loss(logprobs + 0.1, exp.logprobs, exp.advantages, mask, 0.2)
    vf = clipped_value_loss(values + 0.3, exp.values, exp.returns, mask, 0.2)
    return [float(pg.loss), float(vf.loss), float(exp.kl.sum())]


def test_pad_and_post_eos_token_ids_do_not_change_losses(tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = build_model(tokenizer)
    perturb_adapter(model)
    reward = token_share_reward(tokenizer)
    engine = PPOEngine(model, tokenizer, reward, config(whiten_advantages=False))
    # two left-padded prompts and responses of different lengths (row 1 ends early)
    ids = torch.tensor([[0, 0, 1, 5, 6, 7, 8, 9], [1, 4, 5, 6, 9, 2, 0, 0]])
    attn = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]])
    resp_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])

    def rollout(input_ids: torch.Tensor) -> Rollout:
        return Rollout(
            prompts=["a", "b"],
            input_ids=input_ids,
            attention_mask=attn,
            response_start=4,
            response_mask=resp_mask,
            responses=["x", "y"],
            response_token_ids=[[6, 7, 8, 9], [9, 2]],
        )

    baseline = _loss_on(engine, rollout(ids))
    garbage = ids.clone()
    garbage[0, :2] = torch.tensor([13, 17])  # left padding of the prompt
    garbage[1, 6:] = torch.tensor([11, 3])  # after eos
    changed = _loss_on(engine, rollout(garbage))
    assert changed == pytest.approx(baseline, rel=1e-5, abs=1e-6)
    # and a real token change does move them (the test can fail)
    real_change = ids.clone()
    real_change[0, 5] = 15
    assert _loss_on(engine, rollout(real_change)) != pytest.approx(baseline, rel=1e-5, abs=1e-6)


def test_prompt_schedule_is_a_function_of_the_step() -> None:
    first = prompts_for_step(PROMPTS, 0, 5, seed=1)
    assert prompts_for_step(PROMPTS, 0, 5, seed=1) == first
    epoch = [p for s in range(12) for p in prompts_for_step(PROMPTS, s, 1, seed=1)]
    assert sorted(epoch) == sorted(PROMPTS)
    ranks = prompts_for_step(PROMPTS, 0, 2, 1, rank=0, world=2) + prompts_for_step(PROMPTS, 0, 2, 1, rank=1, world=2)
    assert ranks == prompts_for_step(PROMPTS, 0, 4, 1)


def _trained_state(engine: PPOEngine) -> dict[str, torch.Tensor]:
    return engine.model.trainable_state_dict()


def test_resume_after_interrupt_matches_uninterrupted_run(tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reward = token_share_reward(tokenizer)
    cfg = config(steps=4, save_steps=2)

    straight = PPOEngine(build_model(tokenizer), tokenizer, reward, cfg)
    uninterrupted = train_loop(straight, PROMPTS, tmp_path / "a", seed=5, tensorboard=False)

    class Interrupted(Exception):
        pass

    def crash_at_three(step: int, stats: dict[str, float]) -> None:
        if step == 3:
            raise Interrupted

    first = PPOEngine(build_model(tokenizer), tokenizer, reward, cfg)
    with pytest.raises(Interrupted):
        train_loop(first, PROMPTS, tmp_path / "b", seed=5, tensorboard=False, on_step=crash_at_three)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints") == tmp_path / "b" / "checkpoints" / "step-2"

    # A fresh process reloads the same base; its new adapter/value head must be overwritten.
    restarted = build_model(tokenizer)
    perturb_adapter(restarted)
    torch.nn.init.normal_(restarted.value_head.summary.weight)
    second = PPOEngine(restarted, tokenizer, reward, cfg)
    resumed = train_loop(second, PROMPTS, tmp_path / "b", seed=5, tensorboard=False)
    assert resumed["resumed_from"] == 2

    def untimed(stats: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in stats.items() if k != "tokens_per_s" and not k.endswith("_seconds")}

    assert untimed(resumed["stats"]) == untimed(uninterrupted["stats"])
    assert "reward_mean" in untimed(resumed["stats"])
    want, got = _trained_state(straight), _trained_state(second)
    assert want.keys() == got.keys() and any("value_head" in k for k in want)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert second.kl_ctl.value == straight.kl_ctl.value
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-4" / "state.json").read_text())
    assert state["step"] == 4
    assert (tmp_path / "b" / "checkpoints" / "step-4" / "adapter" / "adapter_config.json").is_file()


def test_reward_goes_up_on_a_learnable_task(tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Reward = share of response tokens equal to 'w3': PPO must raise it well above chance."""
    cfg = config(
        steps=14,
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=4,
        min_new_tokens=4,
        max_new_tokens=6,
        save_steps=100,
        kl={"adaptive": False, "initCoef": 0.01},
    )
    engine = PPOEngine(build_model(tokenizer), tokenizer, token_share_reward(tokenizer), cfg)
    history: list[float] = []
    train_loop(
        engine,
        PROMPTS,
        tmp_path,
        seed=1,
        tensorboard=True,
        on_step=lambda step, stats: history.append(stats["reward_mean"]),
    )
    start, end = sum(history[:3]) / 3, sum(history[-3:]) / 3
    print("reward history", [round(h, 3) for h in history])
    assert end > start + 0.25, history
    assert any((tmp_path / "logs").iterdir())  # TensorBoard events were written


def test_full_fine_tuning_keeps_a_frozen_reference_copy(tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    policy = tiny_llama(len(tokenizer), initializer_range=0.2)
    reference = copy.deepcopy(policy)
    with pytest.raises(ValueError, match="frozen copy"):
        ActorCritic(policy, ValueHead(policy.config.hidden_size))
    model = ActorCritic(policy, ValueHead(policy.config.hidden_size), reference=reference)
    assert not any(p.requires_grad for p in reference.parameters())
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    engine = PPOEngine(model, tokenizer, token_share_reward(tokenizer), config(steps=1))
    train_loop(engine, PROMPTS, tmp_path, seed=0, tensorboard=False)
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())
    assert not torch.equal(before["model.embed_tokens.weight"], policy.model.embed_tokens.weight)
