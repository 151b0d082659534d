"""GRPO and RLOO stages on the builtin tiny model: rewards from several sources, metrics, resume,
LoRA on a quantized base, and field-named errors (a few steps each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rlhf_trainer.builtin_task.arithmetic import materialize_tiny_llama
from rlhf_trainer.stages.group_rl import summarize

from .stage_helpers import run_stage_cli, write_config

pytestmark = pytest.mark.timeout(300)

# 2 questions x 2 answers per step; answers of at most 3 tokens
GROUP = {"maxLength": None, "batchSize": 4, "numGenerations": 2, "maxCompletionLength": 3, "learningRate": 0.01}
ARITH = {"type": "builtin", "builtin": "arithmetic"}


@pytest.fixture(scope="module")
def reward_model(work_dir: str) -> str:
    """A one-output classifier on the tiny model's trunk (untrained head: a real model, not a stub)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(work_dir) / "rm"
    base = materialize_tiny_llama(work_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _config(tmp: Path, stage: str, work_dir: str, out: Path, reward_model: str | None = None, **section: Any) -> Path:
    training = {**GROUP, **section.pop("training", {})}
    path = write_config(tmp / f"{stage}-{out.name}.yaml", stage, work_dir, out, training=training, **section)
    if reward_model is not None:
        import yaml

        config = yaml.safe_load(path.read_text())
        config["rewardModel"] = {"name": reward_model}
        path.write_text(yaml.safe_dump(config))
    return path


def test_grpo_with_three_sources_reports_each(work_dir: str, reward_model: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "grpo"
    rewards = [ARITH, {"type": "rewardModel", "weight": 0.5}, {"type": "builtin", "builtin": "exactMatch"}]
    config = _config(
        tmp_path, "grpo", work_dir, out, reward_model, rewards=rewards, training={"beta": 0.1, "lossType": "dr_grpo"}
    )
    code, result = run_stage_cli("grpo", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    m = result.metrics
    for label in ("arithmetic", "reward_model", "exact_match"):
        assert f"rewards/{label}/mean" in m and f"rewards/{label}/std" in m
    # the builtin rewards agree: both check the right sum
    assert m["rewards/arithmetic/mean"] == m["rewards/exact_match/mean"]
    assert m["kl"] >= 0 and 1 <= m["completion_length"] <= 3 and "reward_initial" in m
    assert 0.0 <= m["task_accuracy"] <= 1.0 and m["global_step"] == 2
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "checkpoints" / "checkpoint-2").is_dir()
    AutoModelForCausalLM.from_pretrained(out / "merged")
    assert len(result.termination_message().encode()) <= 4096


def test_rloo_resumes_from_its_checkpoint(work_dir: str, tmp_path: Path) -> None:
    """A restarted stage continues from the TRL checkpoint (here: after 2 of its steps)."""
    out = tmp_path / "rloo"
    first = _config(tmp_path, "rloo", work_dir, out, rewards=[ARITH])
    code, result = run_stage_cli("rloo", first)
    assert code == 0 and result is not None and "resumed_from_step" not in result.metrics, result
    assert "kl" in result.metrics  # rloo's default beta is 0.05: a reference pass
    log_lines = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    second = _config(
        tmp_path, "rloo", work_dir, out, rewards=[ARITH], training={"maxSteps": 4, "scaleRewards": "batch"}
    )
    code, result = run_stage_cli("rloo", second)
    assert code == 0 and result is not None, result
    assert result.metrics["resumed_from_step"] == 2 and result.metrics["global_step"] == 4
    assert (out / "checkpoints" / "checkpoint-4").is_dir() and len(log_lines) >= 2


def test_prompts_and_ground_truth_from_a_file(work_dir: str, tmp_path: Path) -> None:
    """A user's dataset: prompt from the template, ground truth in a renamed column, no reward model."""
    data = tmp_path / "qa.jsonl"
    rows = [{"q": f"What is {a} + 3?", "gold": str(a + 3)} for a in range(10, 18)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "grpo-file"
    config = _config(
        tmp_path,
        "grpo",
        work_dir,
        out,
        dataset={"source": str(data), "fields": {"question": "q", "answer": "gold"}},
        rewards=[{"type": "builtin", "builtin": "exactMatch", "column": "answer", "extract": "lastNumber"}],
        training={"beta": 0.0},
    )
    code, result = run_stage_cli("grpo", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert "rewards/exact_match/mean" in result.metrics and "kl" not in result.metrics
    assert "task_accuracy" not in result.metrics  # only the builtin task has held-out ground truth


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"rewards": [ARITH, {"type": "builtin", "builtin": "exactMatch", "column": "gold"}]}, "rewards[1].column"),
        ({"rewards": [{"type": "function", "function": "not_installed_xyz:score"}]}, "rewards[0].function"),
        ({"rewards": [{"type": "rewardModel"}]}, "rewardModel"),
    ],
)
def test_bad_sources_fail_before_training(work_dir: str, tmp_path: Path, section: dict[str, Any], field: str) -> None:
    out = tmp_path / "bad"
    code, result = run_stage_cli("grpo", _config(tmp_path, "grpo", work_dir, out, **section))
    assert code != 0 and result is not None and result.status == "failed"
    assert result.message is not None and result.message.startswith(field), result.message
    assert not (out / "checkpoints").exists()


def test_qlora_grpo_trains_and_merges(work_dir: str, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "qlora"
    config = _config(
        tmp_path,
        "grpo",
        work_dir,
        out,
        rewards=[ARITH],
        quantization={"mode": "4bit-nf4", "computeDtype": "float32"},
        lora={"r": 4, "alpha": 8},
    )
    code, result = run_stage_cli("grpo", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert getattr(merged.config, "quantization_config", None) is None


LOG = [
    {"loss": 0.1, "reward": 0.2, "reward_std": 0.4, "rewards/a/mean": 0.2, "rewards/a/std": 0.4, "step": 1},
    {"loss": 0.1, "reward": 0.4, "reward_std": 0.3, "rewards/a/mean": 0.4, "rewards/a/std": 0.3, "kl": 0.01},
    {"loss": 0.1, "reward": 0.6, "reward_std": 0.2, "rewards/a/mean": 0.6, "kl": 0.03, "completions/mean_length": 3},
    {"loss": 0.1, "reward": 0.8, "reward_std": 0.1, "rewards/a/mean": 0.8, "kl": 0.05, "completions/mean_length": 2},
    {"train_runtime": 5.0, "train_loss": 0.1},
]


@pytest.mark.parametrize(
    ("logs", "expected"),
    [
        ([], {}),
        (LOG[-1:], {}),
        (
            LOG[:1],
            {"reward_initial": 0.2, "reward": 0.2, "reward_std": 0.4, "rewards/a/mean": 0.2, "rewards/a/std": 0.4},
        ),
        # 4 logged steps: the last one is the window; a key the window lacks is left out
        (
            LOG,
            {
                "reward_initial": 0.2,
                "reward": 0.8,
                "reward_std": 0.1,
                "rewards/a/mean": 0.8,
                "kl": 0.05,
                "completion_length": 2.0,
            },
        ),
        # 8 logged steps: the last two
        (
            LOG[:4] * 2,
            {
                "reward_initial": 0.2,
                "reward": 0.7,
                "reward_std": 0.15,
                "rewards/a/mean": 0.7,
                "kl": 0.04,
                "completion_length": 2.5,
            },
        ),
    ],
)
def test_summary_of_the_logged_steps(logs: list[dict[str, Any]], expected: dict[str, float]) -> None:
    got = summarize(logs, ["a"])
    assert {k: round(v, 6) for k, v in got.items() if k != "completion_length"} == {
        k: v for k, v in expected.items() if k != "completion_length"
    }
    assert got.get("completion_length") == expected.get("completion_length")


def test_prompts_are_cut_to_their_last_tokens() -> None:
    """maxPromptLength keeps the end of a prompt, next to where the answer goes."""
    from datasets import Dataset
    from rlhf_trainer.builtin_task.arithmetic import build_tokenizer
    from rlhf_trainer.stages.trl_glue import truncate_prompts

    tokenizer = build_tokenizer()
    long, short = "Question: What is 12 + 5?\n\nAnswer: ", "Answer: "
    rows = Dataset.from_list([{"prompt": long, "answer": "17"}, {"prompt": short, "answer": "1"}])
    limit = len(tokenizer(short, add_special_tokens=False)["input_ids"]) + 2
    cut = truncate_prompts(rows, tokenizer, limit)
    assert cut["answer"] == ["17", "1"] and cut["prompt"][1] == short
    assert long.endswith(cut["prompt"][0]) and len(tokenizer(cut["prompt"][0])["input_ids"]) == limit
