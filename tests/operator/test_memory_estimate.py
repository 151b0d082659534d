"""`rlhf estimate`: the per-GPU memory of each stage, its formulas, what helps, and the CLI."""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.spec import Accelerator, RLHFRunSpec
from rlhf_api.stage_config import LoraConfig
from rlhf_api.validation import parse_run
from rlhf_cli.main import main
from rlhf_operator.estimate.catalog import CATALOG, hub_cache_dirs, lookup
from rlhf_operator.estimate.memory import (
    GIB,
    GPUS,
    Sizing,
    activation_bytes,
    estimate_run,
    estimate_stage,
    kv_cache_bytes,
    lora_params,
    stage_fit_warnings,
)

REPO = Path(__file__).resolve().parents[2]
STACKLLAMA = REPO / "examples" / "stackllama-7b-a100.yaml"
FULL_70B = REPO / "tests" / "fixtures" / "estimate" / "llama-70b-full-a100-40gb.yaml"
LLAMA7 = CATALOG["meta-llama/Llama-2-7b-hf"]


def catalog(name: str) -> Any:
    return lookup(name)


def run_of(path: Path, **spec_changes: Any) -> Any:
    document = yaml.safe_load(path.read_text())
    document["spec"].update(spec_changes)
    return parse_run(document)


def sft_spec(**sft: Any) -> RLHFRunSpec:
    document = yaml.safe_load(FULL_70B.read_text())
    document["spec"]["sft"].update(sft)
    spec: RLHFRunSpec = parse_run(document).spec
    return spec


def test_every_accelerator_has_a_memory_size() -> None:
    assert set(GPUS) == set(typing.get_args(Accelerator))


def test_the_stackllama_example_fits_its_a100s() -> None:
    estimates = estimate_run(run_of(STACKLLAMA), catalog)
    assert [e.stage for e in estimates] == ["sft", "reward", "ppo"]
    assert all(e.fits for e in estimates), [(e.stage, e.total / GIB) for e in estimates]
    sft, reward, ppo = estimates
    # LoRA on q/v of a bf16 7B: the weights dominate (~12.6 GiB), the adapters are small
    assert 12 * GIB < sft.weights < 13 * GIB and sft.trainable == 32 * 2 * 16 * (4096 + 4096)
    # PPO: the 8-bit policy plus a separate bf16 reward model, and a KV cache for generation
    assert ppo.weights > sft.weights and ppo.kv_cache > 0
    assert reward.params < sft.params  # a score head instead of the LM head


def test_70b_full_fine_tuning_on_one_40gb_gpu_does_not_fit_and_says_what_helps() -> None:
    (estimate,) = estimate_run(run_of(FULL_70B), catalog)
    assert estimate.fits is False and estimate.total > 500 * GIB
    text = "\n".join(estimate.suggestions)
    assert "LoRA" in text and "4-bit" in text and "fsdp over" in text
    assert any(line.endswith("(fits)") for line in estimate.suggestions)
    warnings = stage_fit_warnings(run_of(FULL_70B), catalog)
    assert len(warnings) == 1 and warnings[0].startswith("sft: needs about")


def test_fsdp_divides_weights_and_training_state_by_the_shard_count() -> None:
    spec = sft_spec(placement={"strategy": "fsdp"})
    one, eight = (estimate_stage(spec, "sft", catalog, gpus=n) for n in (1, 8))
    assert eight.weights == pytest.approx(one.weights / 8)
    assert eight.training_state == pytest.approx(one.training_state / 8)
    assert eight.activations > one.activations  # plus the gathered layers' working set
    offload = estimate_stage(sft_spec(placement={"strategy": "fsdp", "fsdpOffload": True}), "sft", catalog, gpus=8)
    assert offload.weights == 0 and offload.training_state == 0


def test_lora_and_quantization_shrink_what_a_gpu_holds() -> None:
    full = estimate_stage(sft_spec(), "sft", catalog)
    lora = estimate_stage(sft_spec(lora={"enabled": True}), "sft", catalog)
    qlora = estimate_stage(sft_spec(lora={"enabled": True}, quantization={"mode": "4bit-nf4"}), "sft", catalog)
    assert full.trainable == full.params and lora.trainable < full.params / 100
    assert lora.training_state < full.training_state / 100
    assert qlora.weights < lora.weights / 3


def test_checkpointing_keeps_only_layer_inputs() -> None:
    without = activation_bytes(LLAMA7, 4096, 2, checkpointing=False)
    with_ = activation_bytes(LLAMA7, 4096, 2, checkpointing=True)
    # per layer and token: 6h + 2h_kv + 4I values without, h with (plus one layer recomputed)
    assert without == 32 * 4096 * (8 * 4096 + 4 * 11008) * 2
    assert with_ == 32 * 4096 * 4096 * 2 + without / 32


def test_kv_cache_and_lora_formulas() -> None:
    # 2 (k, v) x layers x sequences x length x kv heads x head dim x bytes
    assert kv_cache_bytes(LLAMA7, 32, 384, 2) == 2 * 32 * 32 * 384 * 32 * 128 * 2
    assert lora_params(LLAMA7, LoraConfig(r=8, target_modules=["q_proj", "v_proj"])) == 32 * 2 * 8 * (4096 + 4096)


def test_ppo_sizes_generation_by_its_rollout_chunk_and_training_by_its_micro_batch() -> None:
    run = run_of(STACKLLAMA)
    spec = run.spec
    base = estimate_stage(spec, "ppo", catalog)
    chunked = estimate_stage(spec, "ppo", catalog, sizing=Sizing(sequences=8, length=384, response=128, rollout=8))
    assert chunked.kv_cache == pytest.approx(base.kv_cache / 4)  # 8 of the 32 prompts at a time
    micro = estimate_stage(spec, "ppo", catalog, sizing=Sizing(sequences=1, length=384, response=128, rollout=32))
    assert micro.activations < base.activations / 6


def test_gpu_without_bf16_and_bfloat16_model_is_reported_not_estimated() -> None:
    spec = run_of(STACKLLAMA).spec
    estimate = estimate_stage(spec, "sft", catalog, accelerator="nvidia-t4")
    assert not estimate.estimated and estimate.note.startswith("model.dtype: bfloat16 is not native")


def test_cpu_stages_skipped_stages_and_unknown_models() -> None:
    quickstart = run_of(REPO / "examples" / "quickstart.yaml")
    assert all(e.note.startswith("CPU stage") for e in estimate_run(quickstart, catalog))
    assert all(e.fits for e in estimate_run(quickstart, catalog, accelerator="nvidia-l4"))
    dpo = estimate_run(run_of(REPO / "examples" / "dpo-7b.yaml"), catalog)
    assert dpo[0].note == "skipped (existingOutput)" and dpo[1].fits
    unknown = estimate_run(run_of(STACKLLAMA, model={"name": "someone/unheard-of-7b"}), catalog)
    assert all(e.note.startswith("model size unknown") and e.fits is None for e in unknown)


def test_lookup_reads_a_local_config_then_the_hub_cache_then_the_table(tmp_path: Path) -> None:
    config = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}
    config |= {"intermediate_size": 128, "vocab_size": 100}
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "config.json").write_text(json.dumps(config))
    found = lookup(str(tmp_path / "local"))
    assert found is not None and found[0].hidden_size == 64 and found[1].endswith("config.json")

    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config | {"hidden_size": 96}))
    cached = lookup("acme/tiny", [tmp_path / "hub"])
    assert cached is not None and cached[0].hidden_size == 96 and cached[1] == "hub cache"
    assert lookup("acme/tiny") is None
    table = lookup("META-LLAMA/llama-2-7b-hf")
    assert table is not None and table[0] == LLAMA7 and table[1] == "built-in table"
    assert hub_cache_dirs({"HF_HOME": "/h", "HF_HUB_CACHE": "/c"})[:2] == [Path("/c"), Path("/h/hub")]


def test_cli_prints_a_table_and_exits_1_when_a_stage_will_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(STACKLLAMA)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["stage", "model"] and out.count(" yes") == 3
    assert main(["estimate", str(FULL_70B)]) == 1
    captured = capsys.readouterr()
    assert "sft does not fit" in captured.out and "What helps" in captured.out
    assert "sft will not fit" in captured.err


def test_cli_accelerator_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(FULL_70B), "--accelerator", "nvidia-h200"]) == 1
    assert "nvidia-h200 (140)" in capsys.readouterr().out


def test_suggestions_never_mutate_the_spec() -> None:
    run = run_of(FULL_70B)
    before = copy.deepcopy(run.spec.model_dump())
    estimate_run(run, catalog)
    assert run.spec.model_dump() == before


def _grpo_run(**grpo: Any) -> Any:
    """The StackLLaMA example with GRPO in PPO's place (same data, placement and 8-bit LoRA)."""
    document = yaml.safe_load(STACKLLAMA.read_text())
    spec = document["spec"]
    ppo = spec.pop("ppo")
    spec["pipeline"] = ["sft", "reward", "grpo"]
    training = {"batchSize": 8, "gradientAccumulationSteps": 4, "numGenerations": 8, "maxCompletionLength": 128}
    spec["grpo"] = {"dataset": ppo["dataset"], "lora": ppo["lora"], "quantization": ppo["quantization"]}
    spec["grpo"] |= {"placement": ppo["placement"], "training": training} | grpo
    return parse_run(document)


def test_grpo_holds_its_reward_models_and_a_generation_batch_of_kv_cache() -> None:
    grpo = estimate_stage(_grpo_run().spec, "grpo", catalog)
    sft = estimate_stage(_grpo_run().spec, "sft", catalog)
    assert grpo.fits and grpo.weights > sft.weights  # the 8-bit policy plus the bf16 reward model
    # 8 x 4 completions generated per process, each up to 512 prompt + 128 new tokens
    assert grpo.kv_cache == kv_cache_bytes(LLAMA7, 32, 640, 2)
    verifiable = estimate_stage(_grpo_run(rewards=[{"type": "builtin", "builtin": "exactMatch"}]).spec, "grpo", catalog)
    two_models = [{"type": "rewardModel"}, {"type": "model", "model": {"name": "meta-llama/Llama-2-7b-hf"}}]
    both = estimate_stage(_grpo_run(rewards=two_models).spec, "grpo", catalog)
    assert verifiable.weights < grpo.weights < both.weights
    assert both.weights - grpo.weights == pytest.approx(grpo.weights - verifiable.weights)


def test_full_fine_tuned_grpo_with_kl_holds_a_reference_copy() -> None:
    full = {"lora": {"enabled": False}, "quantization": {"mode": "none"}}
    rewards = [{"type": "builtin", "builtin": "exactMatch"}]
    no_kl = estimate_stage(_grpo_run(rewards=rewards, **full).spec, "grpo", catalog)
    training = {"batchSize": 8, "gradientAccumulationSteps": 4, "maxCompletionLength": 128, "beta": 0.04}
    with_kl = estimate_stage(_grpo_run(rewards=rewards, training=training, **full).spec, "grpo", catalog)
    assert with_kl.weights == pytest.approx(2 * no_kl.weights)


def test_kto_is_estimated_from_its_memory_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """kto declares two sequences per example (its completion and the KL estimate's mismatched
    one, each through the policy and the adapter-less reference), as DPO does: on the same
    settings the two estimates agree."""
    document = yaml.safe_load((REPO / "examples" / "dpo-7b.yaml").read_text())
    dpo = estimate_run(parse_run(document), catalog)[1]
    document["spec"]["pipeline"] = ["sft", "kto"]
    document["spec"]["kto"] = document["spec"].pop("dpo")
    kto = estimate_run(parse_run(document), catalog)[1]
    assert kto.stage == "kto" and kto.fits and kto.total > 0
    assert (kto.weights, kto.training_state, kto.activations) == (dpo.weights, dpo.training_state, dpo.activations)

    quickstart = REPO / "examples" / "quickstart-kto.yaml"
    assert [e.stage for e in estimate_run(run_of(quickstart), catalog)] == ["sft", "kto"]
    assert all(e.fits for e in estimate_run(run_of(quickstart), catalog, accelerator="nvidia-l4"))
    assert main(["estimate", str(quickstart), "--accelerator", "nvidia-l4"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]] == ["sft", "kto"]
