"""ReST and RLAIF stages end to end on the builtin tiny model (a few samples and steps each):
their files on the volume, metrics, field-named errors, and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rlhf_api.model_config import ModelConfig
from rlhf_api.rlaif_config import RlaifLabelConfig
from rlhf_api.stage_config import DatasetConfig, QuantizationConfig
from rlhf_trainer.builtin_task import arithmetic as builtin
from rlhf_trainer.data import load_stage_data
from rlhf_trainer.modeling import load_causal_lm
from rlhf_trainer.rlaif.builtin_judge import training_rows
from rlhf_trainer.rlaif.judge import PairJudge
from rlhf_trainer.stages import rest as rest_stage

from .stage_helpers import run_stage_cli, write_config

pytestmark = pytest.mark.timeout(300)

SMALL_DATA = {"source": "builtin:arithmetic", "maxSamples": 12}
SAMPLING = {"maxNewTokens": 3, "temperature": 1.5, "batchSize": 64}


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- rlaif


RLAIF_SECTION: dict[str, Any] = {
    "judge": {"name": "builtin:tiny-llama"},
    "constitution": ["Give the exact sum."],
    "judgeTemplate": "{constitution}\nA: {response_a}\nB: {response_b}\n{prompt}Better:",
    "responsesPerPrompt": 4,
    "sampling": SAMPLING,
}


def rlaif_config(path: Path, work_dir: str, out: Path, **section: Any) -> Path:
    config = write_config(path, "rlaif", work_dir, out, dataset=SMALL_DATA, **{**RLAIF_SECTION, **section})
    document = yaml.safe_load(config.read_text())
    document["rlaif"].pop("training")  # rlaif trains nothing
    config.write_text(yaml.safe_dump(document))
    return config


def test_rlaif_writes_pairs_judgements_and_metrics(
    work_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rlaif"
    config = rlaif_config(tmp_path / "rlaif.yaml", work_dir, out)
    code, result = run_stage_cli("rlaif", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    assert result.merged_path is None  # the stage's output is data
    assert result.steps == result.planned_steps == 12  # prompts labelled: what the next stage's handover checks
    metrics = result.metrics
    assert metrics["prompts"] == 12 and 1 <= metrics["pairs_judged"] <= 12
    assert metrics["pairs_written"] == metrics["pairs_judged"]  # threshold 0.5 keeps every pair
    assert 0.5 <= metrics["mean_confidence"] <= 1.0 and 0.0 <= metrics["order_agreement"] <= 1.0

    pairs = jsonl(out / "preferences.jsonl")
    assert len(pairs) == metrics["pairs_written"]
    for row in pairs:
        assert set(row) == {"prompt", "chosen", "rejected", "confidence"}
        assert row["chosen"].strip() != row["rejected"].strip() and row["confidence"] >= 0.5
        assert row["prompt"].startswith("Question: What is ")
    judgements = jsonl(out / "judgements.jsonl")
    assert len(judgements) == metrics["pairs_judged"]
    for row in judgements:  # ground truth from the builtin task's answers
        truth = builtin.correct_answer(row["prompt"].split("Question: ")[1].split("\n")[0])
        assert row["a_right"] == (builtin.extract_answer(row["a"]) == truth)
        mean = (row["p_a_shown_first"] + row["p_a_shown_second"]) / 2
        assert row["confidence"] == pytest.approx(max(mean, 1 - mean))
    # the next stage reads the file as preference data
    data = load_stage_data(DatasetConfig(source=str(out / "preferences.jsonl")), "dpo", work_dir, 42)
    assert set(data.train.column_names) == {"prompt", "chosen", "rejected"}

    # a restarted stage reuses its sampled candidates
    candidates = out / "candidates.jsonl"
    written = candidates.stat().st_mtime_ns
    (out / "result.json").unlink()
    capsys.readouterr()
    code, again = run_stage_cli("rlaif", config)
    assert code == 0 and again is not None
    assert '"event":"reuse"' in capsys.readouterr().out.replace(" ", "")
    assert candidates.stat().st_mtime_ns == written
    assert jsonl(out / "preferences.jsonl") == pairs


def test_rlaif_threshold_that_drops_every_pair_names_the_field(work_dir: str, tmp_path: Path) -> None:
    config = rlaif_config(tmp_path / "rlaif.yaml", work_dir, tmp_path / "out", confidenceThreshold=0.9999)
    code, result = run_stage_cli("rlaif", config)
    assert code == 1 and result is not None
    assert result.message is not None and result.message.startswith("rlaif.confidenceThreshold: no pair reached")


def test_builtin_judge_needs_responses_mode(work_dir: str, tmp_path: Path) -> None:
    judge = {"name": "builtin:arithmetic-judge"}
    config = rlaif_config(tmp_path / "rlaif.yaml", work_dir, tmp_path / "out", judge=judge)
    code, result = run_stage_cli("rlaif", config)
    assert code == 2 and result is not None and result.message is not None
    assert result.message.startswith("rlaif.choices: builtin:arithmetic-judge answers the task")
    assert not (tmp_path / "out" / "candidates.jsonl").exists()  # refused before sampling


def test_builtin_judge_rows_always_complete_with_the_right_answer() -> None:
    config = RlaifLabelConfig(
        constitution=["Give the exact sum."],
        judge_template="{constitution}\nA: {response_a}\nB: {response_b}\n{prompt}",
        choices="responses",
    )
    rows = training_rows(config, DatasetConfig(source="builtin:arithmetic"), seed=42)
    listed = 0
    for row in rows:
        question = row["prompt"].split("Question: ")[1].split("\n")[0]
        assert row["completion"] == builtin.correct_answer(question)
        if row["prompt"].startswith("- Give the exact sum.\nA: "):
            listed += 1
            shown = [line[3:] for line in row["prompt"].splitlines() if line.startswith(("A: ", "B: "))]
            assert row["completion"] in shown and len(set(shown)) == 2  # the right and a wrong answer
    assert 0.4 < listed / len(rows) < 0.6
    assert training_rows(config, DatasetConfig(source="builtin:arithmetic"), seed=42) == rows  # seeded


def test_judge_probabilities_are_the_choices_log_probabilities(work_dir: str) -> None:
    """P(first) = sigmoid(logp(first choice) - logp(second choice)) after the judge prompt, and
    the second order is the first with the responses swapped."""
    model, tokenizer = load_causal_lm(ModelConfig(name="builtin:tiny-llama"), QuantizationConfig(), work_dir)
    for choices in ("labels", "responses"):
        config = RlaifLabelConfig(
            judge_template="{constitution} {prompt} A: {response_a} B: {response_b} Better:",
            choices=choices,  # type: ignore[arg-type]
            judge_batch_size=3,  # several batches, with padding
        )
        judge = PairJudge(model, tokenizer, config)
        rows = [("Question: What is 12 + 5?", "17", "27"), ("Q", "4", "five hundred"), ("Question: x", "1", "2")]

        def log_prob(text: str, choice: str, with_eos: bool) -> float:
            prompt = tokenizer(text)["input_ids"]
            ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
            ids = ids + ([tokenizer.eos_token_id] if with_eos else [])
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + ids])).logits.log_softmax(-1)[0]
            return sum(float(logits[len(prompt) - 1 + k, t]) for k, t in enumerate(ids))

        expected = []
        for prompt, a, b in rows:
            text = f"- {config.constitution[0]}\n- {config.constitution[1]} {prompt} A: {a} B: {b} Better:"
            first, second = (config.labels[0], config.labels[1]) if choices == "labels" else (a, b)
            eos = choices == "responses"
            gap = log_prob(text, first, eos) - log_prob(text, second, eos)
            expected.append(float(torch.sigmoid(torch.tensor(gap))))
        assert judge.first_choice_probability(rows) == pytest.approx(expected, abs=1e-5)
        swapped = judge.first_choice_probability([(p, b, a) for p, a, b in rows])
        for judgement, a_first, b_first in zip(judge.judge(rows), expected, swapped, strict=True):
            assert judgement.a_first == pytest.approx(a_first, abs=1e-5)
            assert judgement.a_second == pytest.approx(1 - b_first, abs=1e-5)


# ----------------------------------------------------------------------------- rest


def rest_config(path: Path, work_dir: str, out: Path) -> Path:
    return write_config(
        path,
        "rest",
        work_dir,
        out,
        dataset=SMALL_DATA,
        rewards=[{"type": "builtin", "builtin": "arithmetic"}],
        growSteps=2,
        samplesPerPrompt=2,
        threshold={"mode": "absolute", "values": [0.0, 0.0]},
        sampling=SAMPLING,
        lora={"r": 4, "alpha": 8},
    )


def test_rest_grows_improves_and_resumes_at_the_iteration_it_stopped(
    work_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rest"
    config = rest_config(tmp_path / "rest.yaml", work_dir, out)
    improve = rest_stage._Run.improve
    calls = []

    def failing_third(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("node lost")
        return improve(self, *args, **kwargs)

    monkeypatch.setattr(rest_stage._Run, "improve", failing_third)
    code, result = run_stage_cli("rest", config)
    assert code == 1 and result is not None and result.message == "RuntimeError: node lost"
    state = json.loads((out / "rest_state.json").read_text())
    assert [(i["grow"], i["improve"]) for i in state["iterations"]] == [(1, 1), (1, 2)]
    first_grow = out / "grow-1" / "samples.jsonl"
    grown = {g: (out / f"grow-{g}" / "samples.jsonl").stat().st_mtime_ns for g in (1, 2)}
    samples = jsonl(first_grow)
    assert len(samples) == 24  # 12 prompts x 2 samples
    assert all(set(s) == {"prompt", "response", "reward", "rewards"} for s in samples)
    assert all(s["reward"] in (0.0, 1.0) and s["rewards"] == {"arithmetic": s["reward"]} for s in samples)

    monkeypatch.setattr(rest_stage._Run, "improve", improve)
    capsys.readouterr()
    code, result = run_stage_cli("rest", config)
    assert code == 0 and result is not None and result.status == "succeeded", result
    printed = capsys.readouterr().out
    events = [json.loads(line.split("@@rlhf ", 1)[1]) for line in printed.splitlines() if "@@rlhf " in line]
    resumed_at = [e for e in events if e.get("event") == "resume" and "after" in e]
    assert [(e["after"], e["of"]) for e in resumed_at] == [(2, 4)]
    resumed = json.loads((out / "rest_state.json").read_text())
    assert resumed["iterations"][:2] == state["iterations"]  # finished iterations are not redone
    assert [(i["grow"], i["improve"]) for i in resumed["iterations"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for g in (1, 2):  # both Grow steps' samples reused, not sampled again
        assert (out / f"grow-{g}" / "samples.jsonl").stat().st_mtime_ns == grown[g]
    for record in resumed["iterations"]:
        assert record["samples"] == 24 and record["samples_kept"] == 24  # threshold 0 keeps all
        assert 0.0 <= record["task_accuracy"] <= 1.0 and record["train_loss"] > 0

    assert (result.steps, result.planned_steps, result.resumed_from_step) == (4, 4, 2)  # Improve steps
    metrics = result.metrics
    assert metrics["iterations"] == 4 and metrics["samples_kept"] == 24
    assert metrics["task_accuracy"] == resumed["iterations"][-1]["task_accuracy"]
    assert metrics["task_accuracy_before"] == state["task_accuracy_before"]
    assert result.merged_path == str(out / "merged") and (out / "merged" / "config.json").exists()
    assert result.adapter_path == str(out / "adapter")
    # one policy on the volume at a time: earlier steps' models were deleted
    assert not list((out / "steps").glob("*/merged"))
    assert list((out / "logs").rglob("events.out.tfevents*"))


def test_the_stage_after_rlaif_checks_its_pairs_were_written(tmp_path: Path) -> None:
    """Handover: an unfinished rlaif stage is named as the next stage's dataset, before any loading."""
    from rlhf_api.trainer_job import TrainerJobConfig
    from rlhf_trainer.errors import StageError
    from rlhf_trainer.handover import check_inputs

    cfg = TrainerJobConfig.model_validate(
        {
            "stage": "dpo",
            "runName": "r",
            "model": {"name": str(tmp_path / "sft" / "merged")},
            "outputDir": str(tmp_path / "dpo"),
            "workDir": str(tmp_path),
            "inputs": [{"stage": "rlaif", "outputDir": str(tmp_path / "rlaif"), "role": "dataset"}],
            "dpo": {"dataset": {"source": str(tmp_path / "rlaif" / "preferences.jsonl")}},
        }
    )
    with pytest.raises(StageError) as caught:
        check_inputs(cfg)
    assert str(caught.value).startswith("dataset.source: input stage 'rlaif' has no readable result")
