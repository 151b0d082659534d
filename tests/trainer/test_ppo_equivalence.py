"""What the engine's shortcuts must not change: old log-probs and values taken from the sampling
pass equal a separate forward pass; micro-batches with gradient accumulation and gradient
checkpointing give the same update as one pass over the mini-batch; a bf16 trunk keeps the
value head, log-probs and losses in fp32."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rlhf_api.stages.ppo import PPOTrainingConfig
from rlhf_trainer.ppo.core import entropy_from_logits, logprobs_from_logits
from rlhf_trainer.ppo.engine import PPOEngine
from rlhf_trainer.ppo.rollout import SamplingSettings, sample_rollout
from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead

from tests.support.tiny_models import tiny_llama, token_share_reward, word_tokenizer

WORDS = [f"w{i}" for i in range(20)]
PROMPTS = [" ".join(WORDS[i : i + 1 + i % 4]) for i in range(8)]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return word_tokenizer(WORDS)


def build_model(tokenizer, dtype: torch.dtype = torch.float32, lora: bool = True) -> ActorCritic:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    base = tiny_llama(len(tokenizer), initializer_range=0.2).to(dtype)
    if not lora:
        reference = tiny_llama(len(tokenizer), initializer_range=0.2).to(dtype)
        reference.load_state_dict(base.state_dict())
        return ActorCritic(base, ValueHead(base.config.hidden_size), reference=reference)
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear"))
    with torch.no_grad():  # a live adapter, so that policy and reference differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3)
    return ActorCritic(policy, ValueHead(base.config.hidden_size))


def config(**overrides: object) -> PPOTrainingConfig:
    values: dict[str, object] = {
        "steps": 1,
        "batch_size": 8,
        "mini_batch_size": 4,
        "ppo_epochs": 2,
        "learning_rate": 1e-2,
        "min_new_tokens": 2,
        "max_new_tokens": 6,
        "temperature": 0.8,
        "kl": {"adaptive": False, "initCoef": 0.1},
    }
    values.update(overrides)
    return PPOTrainingConfig.model_validate(values)


@pytest.mark.parametrize(("chunk", "top_k"), [(None, 0), (3, 5)])
def test_sampling_pass_gives_the_separate_pass_numbers(tokenizer, chunk: int | None, top_k: int) -> None:  # type: ignore[no-untyped-def]
    model = build_model(tokenizer)
    engine = PPOEngine(model, tokenizer, token_share_reward(tokenizer), config(rollout_batch_size=chunk, top_k=top_k))
    torch.manual_seed(1)
    lengths = [2, 6, 3, 6, 1, 5, 6, 4]
    rollout = sample_rollout(
        model, tokenizer, PROMPTS, lengths, SamplingSettings(0.8, top_k, 1.0), 64, engine.device, chunk
    )
    assert rollout.logprobs is not None and rollout.values is not None and rollout.entropy is not None
    mask = rollout.response_mask.bool()
    with torch.no_grad():
        logits, logprobs, values = engine.policy_pass(rollout, torch.arange(len(PROMPTS)))
    # Compared where it matters (real response tokens); padding slots are masked everywhere.
    torch.testing.assert_close(rollout.logprobs[mask], logprobs[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rollout.values[mask], values[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rollout.entropy[mask], entropy_from_logits(logits)[mask], rtol=1e-4, atol=1e-5)
    # ... and the engine's experience uses them, so its first-update ratio is 1.
    experience = engine.make_experience(rollout)
    assert torch.equal(experience.logprobs, rollout.logprobs)
    without = type(rollout)(**{**rollout.__dict__, "logprobs": None, "values": None, "entropy": None})
    recomputed = engine.make_experience(without)
    torch.testing.assert_close(experience.logprobs[mask], recomputed.logprobs[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(experience.advantages, recomputed.advantages, rtol=1e-3, atol=1e-4)
    assert experience.entropy == pytest.approx(recomputed.entropy, rel=1e-4)


def _one_update(tokenizer, lora: bool = True, **overrides: object) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The trainable weights after one update on the same rollout (same mini-batch order), its
    stats, and the fewest response tokens any mini-batch of that rollout can hold."""
    model = build_model(tokenizer, lora=lora)
    engine = PPOEngine(model, tokenizer, token_share_reward(tokenizer), config(**overrides))
    torch.manual_seed(7)
    rollout = sample_rollout(model, tokenizer, PROMPTS, [6, 2, 5, 6, 3, 6, 4, 6], engine.sampling, 64, engine.device)
    experience = engine.make_experience(rollout)
    torch.manual_seed(11)
    stats = engine.update(experience)
    per_row = rollout.response_mask.sum(-1).sort().values
    fewest = per_row[: engine.cfg.mini_batch_size].sum()
    return {**model.trainable_state_dict(), **{k: torch.tensor(v) for k, v in stats.items()}, "fewest_tokens": fewest}


# Rounding bounds, from fp32's epsilon and the size of the computation (an update's numbers
# are not bitwise equal across micro-batch splits, thread counts or CPUs: sums run in another
# order). The longest sums add a mini-batch's tokens (at most 4 rows x 6) times the MLP width
# (128) of terms; a sum of n terms is off by at most n * eps relative to its terms' magnitudes.
# Adam's step divides by the gradient's own scale, so a gradient off by that relative error
# moves a weight by at most learning rate x that error, per step (2 epochs x 2 mini-batches).
FP32_EPS = torch.finfo(torch.float32).eps
SUM_TERMS = 4 * 6 * 128
RTOL = SUM_TERMS * FP32_EPS  # ~3.7e-4
ATOL = 1e-2 * 4 * RTOL  # ~1.5e-5


def _assert_same(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    assert int(left["fewest_tokens"]) == int(right["fewest_tokens"])  # the same rollout
    # A clip fraction counts events (a ratio or a value beyond its clip range), not a rounded
    # sum: equal by design wherever a token is not within rounding of the range's edge, where a
    # rounding difference may flip it. One flip in a mini-batch of T tokens moves that update's
    # fraction by 1/T, and the reported mean over updates by at most 1/(fewest tokens) when each
    # update flips at most one (the splits' numbers differ by ~1e-7, so a token flips only when its
    # |v - v_old| or |ratio - 1| lies that close to the edge: two in one mini-batch is negligible).
    one_flip = 1.0 / float(left["fewest_tokens"]) + 8 * FP32_EPS
    for name in left:
        if name.endswith("clip_frac"):
            assert abs(float(left[name]) - float(right[name])) <= one_flip, (name, left[name], right[name])
        else:
            torch.testing.assert_close(left[name], right[name], rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_micro_batches_accumulate_to_the_mini_batch_update(tokenizer, lora: bool) -> None:  # type: ignore[no-untyped-def]
    whole = _one_update(tokenizer, lora)
    _assert_same(whole, _one_update(tokenizer, lora, micro_batch_size=1))
    _assert_same(whole, _one_update(tokenizer, lora, micro_batch_size=3))  # 3 + 1: no divisibility needed
    # and the update moved the weights (the comparison can fail)
    initial = build_model(tokenizer, lora=lora).trainable_state_dict()
    assert any(not torch.allclose(initial[k], whole[k]) for k in initial)


def test_gradient_checkpointing_gives_the_same_update(tokenizer) -> None:  # type: ignore[no-untyped-def]
    _assert_same(_one_update(tokenizer), _one_update(tokenizer, gradient_checkpointing=True, micro_batch_size=2))


def _saved_for_backward(tokenizer, checkpointing: bool) -> int:  # type: ignore[no-untyped-def]
    """Elements the policy forward of a training pass keeps for backward."""
    model = build_model(tokenizer)
    engine = PPOEngine(model, tokenizer, token_share_reward(tokenizer), config(gradient_checkpointing=checkpointing))
    rollout = sample_rollout(model, tokenizer, PROMPTS[:4], [6] * 4, engine.sampling, 64, engine.device)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), model.training_pass():
        engine.policy_pass(rollout, torch.arange(4))
    assert not model.training  # back in eval mode for sampling
    return sum(saved)


def test_gradient_checkpointing_keeps_fewer_activations(tokenizer) -> None:  # type: ignore[no-untyped-def]
    plain, checkpointed = _saved_for_backward(tokenizer, False), _saved_for_backward(tokenizer, True)
    assert checkpointed < 0.7 * plain, (checkpointed, plain)


def test_bf16_trunk_keeps_value_head_logprobs_and_losses_in_fp32(tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = build_model(tokenizer, dtype=torch.bfloat16)
    base_weight = model.policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert base_weight.dtype == torch.bfloat16
    # Trainable weights (LoRA, value head) are fp32, so Adam updates are not lost to rounding.
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())
    engine = PPOEngine(model, tokenizer, token_share_reward(tokenizer), config())
    torch.manual_seed(2)
    rollout = sample_rollout(model, tokenizer, PROMPTS, [4] * 8, engine.sampling, 64, engine.device)
    for name in ("logprobs", "values", "entropy"):
        assert getattr(rollout, name).dtype == torch.float32, name
    experience = engine.make_experience(rollout)
    for name in ("logprobs", "ref_logprobs", "values", "advantages", "returns"):
        assert getattr(experience, name).dtype == torch.float32, name
    with torch.no_grad():
        logits, logprobs, values = engine.policy_pass(rollout, torch.arange(8))
    assert logits.dtype == torch.bfloat16 and logprobs.dtype == torch.float32 and values.dtype == torch.float32
    # The row-by-row fp32 log-probs equal a full-vocabulary fp32 log_softmax.
    targets = rollout.response_ids
    full = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, targets), full)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    stats = engine.update(experience)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    after = model.trainable_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_passes_leave_out_only_what_no_prediction_reads(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The policy and reference passes skip the last token (it predicts nothing): their logits
    equal the full causal LM's over the whole sequence, padding and LoRA included."""
    model = build_model(tokenizer)
    torch.manual_seed(3)
    rollout = sample_rollout(
        model, tokenizer, PROMPTS, [6, 2, 5, 6, 3, 6, 4, 6], SamplingSettings(), 64, torch.device("cpu")
    )
    ids, mask, start = rollout.input_ids, rollout.attention_mask, rollout.response_start
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits, _ = model(ids, mask, start)
        full = model.policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, start - 1 : -1]
        torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
        with model.policy.disable_adapter():
            full_reference = model.policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        reference = model.reference_logits(ids, mask, start)
    torch.testing.assert_close(reference, full_reference[:, start - 1 : -1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(reference, logits, atol=1e-3)  # the adapter is live: the two differ
