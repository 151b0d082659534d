"""The kto stage on the builtin tiny model: pairs unpaired and mixed, a few steps trained, resumed
from a checkpoint, merged; with LoRA on a 4-bit (QLoRA) base."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from rlhf_trainer.stages.kto import unpaired

from .stage_helpers import assert_merged_plain_and_trained, run_stage_cli, write_config

pytestmark = pytest.mark.timeout(300)

PAIRS = {"source": "builtin:arithmetic", "format": "preference", "maxSamples": 64}


def test_unpaired_gives_one_desirable_and_one_undesirable_example_per_pair_in_a_mixed_order() -> None:
    pairs = Dataset.from_list([{"prompt": f"Q{i} ", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(64)])
    rows = unpaired(pairs, seed=3).to_list()
    assert len(rows) == 128
    assert {(r["prompt"], r["completion"], r["label"]) for r in rows} == {
        (f"Q{i} ", f"{kind}{i}", kind == "good") for i in range(64) for kind in ("good", "bad")
    }
    # TRL samples KTO data in order (its KL estimate pairs batch neighbours): unshuffled, the
    # first 64 rows would all be desirable. Every batch of 8 here holds both labels.
    assert all(len({r["label"] for r in rows[i : i + 8]}) == 2 for i in range(0, 128, 8))
    assert unpaired(pairs, seed=3).to_list() == rows and unpaired(pairs, seed=4).to_list() != rows


def test_kto_trains_merges_and_resumes_from_its_checkpoint(work_dir: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "kto"
    first = write_config(tmp_path / "a.yaml", "kto", work_dir, out, dataset=PAIRS, training={"batchSize": 4})
    code, result = run_stage_cli("kto", first)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert (result.steps, result.planned_steps, result.resumed_from_step) == (2, 2, None)
    assert 0.0 <= result.metrics["task_accuracy"] <= 1.0 and result.metrics["train_loss"] > 0
    # TRL's KTO evaluation on the held-out pairs: the loss, the KL estimate, both labels' rewards
    for key in ("eval_loss", "eval_kl", "eval_rewards/chosen", "eval_rewards/rejected"):
        assert key in result.metrics, key
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())

    second = write_config(
        tmp_path / "b.yaml", "kto", work_dir, out, dataset=PAIRS, training={"batchSize": 4, "maxSteps": 4}
    )
    code, result = run_stage_cli("kto", second)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert (result.steps, result.planned_steps, result.resumed_from_step) == (4, 4, 2)
    assert result.metrics["global_step"] == 4 and (out / "checkpoints" / "checkpoint-4").is_dir()


def test_kto_with_lora_on_a_4bit_base_merges_into_a_plain_model(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    work_dir = str(tmp_path)
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "kto.yaml",
        "kto",
        work_dir,
        out,
        dataset=PAIRS,
        quantization={"mode": "4bit-nf4", "computeDtype": "float32"},
        lora={"r": 4, "alpha": 8},
        training={"batchSize": 4, "learningRate": 0.01},
    )
    code, result = run_stage_cli("kto", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert "task_accuracy" in result.metrics
    assert_merged_plain_and_trained(out / "merged", work_dir)
