"""The reward model as a second LoRA adapter (+ score head) on the policy's own base weights:
same scores as the merged reward model, no effect on the policy or the reference, and the
PPO stage uses it only when the reward stage trained it on the weights the policy starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from rlhf_api.layout import result_path
from rlhf_api.model_config import ModelConfig
from rlhf_api.result import StageResult, write_result
from rlhf_api.stage_config import LoraConfig, QuantizationConfig
from rlhf_api.trainer_job import StageInput, TrainerJobConfig
from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
from rlhf_trainer.modeling import (
    BaseWeights,
    apply_lora,
    load_causal_lm,
    load_sequence_classifier,
    save_merged,
)
from rlhf_trainer.ppo.reward_scoring import REWARD_ADAPTER, AdapterScore, classifier_score, load_reward_adapter
from rlhf_trainer.ppo.value_head import ActorCritic, ValueHead

pytestmark = pytest.mark.timeout(300)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Non-zero LoRA B and a random score head, so the adapter changes the scores."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or ("score" in name and p.requires_grad):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(work_dir, base path, reward merged path): a LoRA reward 'stage' output on the builtin base."""
    work_dir = str(tmp_path_factory.mktemp("run"))
    base = materialize_tiny_llama(work_dir)
    torch.manual_seed(0)
    model, tokenizer = load_sequence_classifier(ModelConfig(name=base), QuantizationConfig(), work_dir)
    model = apply_lora(model, LoraConfig(r=4, alpha=8), "SEQ_CLS")
    _perturb(model, 1)
    out = Path(work_dir) / "reward"
    merged, adapter = save_merged(
        model, tokenizer, str(out), BaseWeights(ModelConfig(name=base), QuantizationConfig(), work_dir)
    )
    write_result(
        StageResult(stage="reward", status="succeeded", output_path=str(out), merged_path=merged, adapter_path=adapter),
        result_path(str(out)),
    )
    return work_dir, base, merged


def _batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    texts = ["What is 12 + 7? 19", "What is 3 + 4? 8", "What is 45 + 45? 90 and more"]
    batch = tokenizer([t + tokenizer.eos_token for t in texts], padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("lora_policy", [True, False], ids=["lora-policy", "full-ft-reference-copy"])
def test_adapter_scores_equal_the_merged_reward_model(reward_run: tuple[str, str, str], lora_policy: bool) -> None:
    work_dir, base, merged = reward_run
    reward_model, tokenizer = load_sequence_classifier(ModelConfig(name=merged), QuantizationConfig(), work_dir)
    ids, mask = _batch(tokenizer)
    expected = classifier_score(reward_model)(ids, mask)

    policy, _ = load_causal_lm(ModelConfig(name=base), QuantizationConfig(), work_dir)
    plain = load_causal_lm(ModelConfig(name=base), QuantizationConfig(), work_dir)[0].eval()
    frozen_copy = load_causal_lm(ModelConfig(name=base), QuantizationConfig(), work_dir)[0].eval()
    if lora_policy:
        policy = apply_lora(policy, LoraConfig(r=4, alpha=8, dropout=0.0), "CAUSAL_LM")
        _perturb(policy, 2)
        host, head = load_reward_adapter(policy, str(Path(merged).parent / "adapter"))
        assert host is policy
        model = ActorCritic(policy, ValueHead(128))
    else:
        host, head = load_reward_adapter(plain, str(Path(merged).parent / "adapter"))
        model = ActorCritic(policy.requires_grad_(True), ValueHead(128), reference=host)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(REWARD_ADAPTER in n for n in trainable)
    with torch.no_grad():
        policy_before = model(ids, mask, 3)[0]
        reference_before = model.reference_logits(ids, mask, 3)

    scores = AdapterScore(host, head, tokenizer.pad_token_id)(ids, mask)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    assert scores.abs().max() > 1e-3  # the comparison is not between zeros

    # Scoring changed neither the policy, nor the reference (the base), nor what trains.
    with torch.no_grad():
        assert torch.equal(model(ids, mask, 3)[0], policy_before)
        reference = model.reference_logits(ids, mask, 3)
        assert torch.equal(reference, reference_before)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        base_logits = frozen_copy(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, 2:-1]
    torch.testing.assert_close(reference, base_logits)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def _job(
    work_dir: str, out: Path, reward_path: str, model: str = "builtin:tiny-llama", **ppo: object
) -> TrainerJobConfig:
    training = {"steps": 1, "batchSize": 4, "miniBatchSize": 2, "ppoEpochs": 1, "minNewTokens": 2, "maxNewTokens": 3}
    return TrainerJobConfig.model_validate(
        {
            "stage": "ppo",
            "runName": "test",
            "model": {"name": model},
            "rewardModel": {"name": reward_path},
            "outputDir": str(out),
            "workDir": work_dir,
            "ppo": {"dataset": {"source": "builtin:arithmetic"}, "lora": {"r": 4}, "training": training, **ppo},
        }
    )


def test_shared_base_is_detected_only_for_the_policys_own_weights(
    reward_run: tuple[str, str, str], tmp_path: Path
) -> None:
    from rlhf_trainer.stages.ppo import shared_reward_adapter

    work_dir, base, merged = reward_run
    adapter = str(Path(merged).parent / "adapter")
    assert shared_reward_adapter(_job(work_dir, tmp_path, merged)) == adapter
    assert shared_reward_adapter(_job(work_dir, tmp_path, merged, model=base)) == adapter
    # Another base: no.
    other = tmp_path / "other-base"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert shared_reward_adapter(_job(work_dir, tmp_path, merged, model=str(other))) is None
    copied = tmp_path / "copied" / "merged"
    copied.parent.mkdir()
    os.symlink(merged, copied, target_is_directory=True)  # the same files, but no result.json beside
    assert shared_reward_adapter(_job(work_dir, tmp_path, str(copied))) == adapter  # realpath: the same dir
    # A reward stage without an adapter (full fine-tuning), or one that failed: no.
    for name, fields in (("full-ft", {"adapter_path": None}), ("failed", {"status": "failed"})):
        out = tmp_path / name
        (out / "merged").mkdir(parents=True)
        result = {"stage": "reward", "status": "succeeded", "output_path": str(out), "adapter_path": adapter}
        result |= {"merged_path": str(out / "merged"), **fields}
        write_result(StageResult(**result), result_path(str(out)))
        assert shared_reward_adapter(_job(work_dir, tmp_path, str(out / "merged"))) is None, name
    # The run's inputs name the reward stage's directory: its result must be about this merged model.
    job = _job(work_dir, tmp_path, str(tmp_path / "full-ft" / "merged"))
    job.inputs = [StageInput(stage="reward", output_dir=str(Path(merged).parent), role="rewardModel")]
    assert shared_reward_adapter(job) is None
    job.reward_model = ModelConfig(name=merged)
    assert shared_reward_adapter(job) == adapter


@pytest.mark.slow
def test_ppo_stage_scores_with_the_adapter_on_the_shared_base(reward_run: tuple[str, str, str], tmp_path: Path) -> None:
    from rlhf_trainer.stages import ppo
    from transformers import AutoModelForCausalLM

    work_dir, _, merged = reward_run
    result = ppo.run(_job(work_dir, tmp_path / "ppo", merged))
    assert result.status == "succeeded", result.message
    assert result.metrics["reward_on_shared_base"] == 1.0
    assert result.metrics["reward_std"] > 0  # scores come from the adapter, not a constant
    # The outputs hold the policy alone.
    assert not (tmp_path / "ppo" / "adapter" / REWARD_ADAPTER).exists()
    merged_policy = AutoModelForCausalLM.from_pretrained(result.merged_path)
    assert not any("lora" in name for name, _ in merged_policy.named_parameters())
