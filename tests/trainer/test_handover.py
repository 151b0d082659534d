"""Checked handover: an unfinished input stage, an adapter taken for a model, a tokenizer without
the tokens a stage needs are config errors (exit code 2) naming the input, before anything trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.result import EXIT_CONFIG, StageResult, write_result
from rlhf_api.trainer_job import StageInput, TrainerJobConfig
from rlhf_trainer.errors import StageError
from rlhf_trainer.handover import (
    END_OF_SCORED_TEXT,
    END_OF_TEXT,
    PADDING,
    check_inputs,
    model_dir_problem,
    models_used,
    result_problem,
    token_needs,
    token_problem,
)

from tests.support.tiny_models import word_tokenizer

from .stage_helpers import run_stage_cli, write_config

pytestmark = pytest.mark.timeout(120)

SFT_IN = StageInput(stage="sft", output_dir="/w/run/sft", role="model")


def _result(**fields: Any) -> StageResult:
    values: dict[str, Any] = {
        "stage": "sft",
        "status": "succeeded",
        "output_path": "/w/run/sft",
        "steps": 10,
        "planned_steps": 10,
    }
    return StageResult(**(values | fields))


RESULT_CASES: list[tuple[str, StageResult | None, str | None]] = [
    ("finished", _result(), None),
    ("trained more than planned (resumed from a later checkpoint)", _result(steps=12), None),
    ("no result file", None, "input stage 'sft' has no readable result (/w/run/sft/result.json): it has not finished"),
    (
        "failed",
        _result(status="failed", message="dataset.source: not found"),
        "input stage 'sft' did not succeed: /w/run/sft/result.json says failed: dataset.source: not found",
    ),
    (
        "preempted",
        _result(status="failed", preempted=True, steps=4, message=None),
        "input stage 'sft' did not succeed: /w/run/sft/result.json says failed",
    ),
    (
        "exit 0 without training its steps",
        _result(steps=3),
        "input stage 'sft' trained 3 of its 10 planned steps (/w/run/sft/result.json)",
    ),
    (
        "no step count",
        _result(steps=None),
        "input stage 'sft': /w/run/sft/result.json does not record steps and plannedSteps, "
        "so its training cannot be confirmed",
    ),
    (
        "another stage's result",
        _result(stage="reward"),
        "input stage 'sft': /w/run/sft/result.json is the result of stage 'reward'",
    ),
]


@pytest.mark.parametrize(("result", "expected"), [c[1:] for c in RESULT_CASES], ids=[c[0] for c in RESULT_CASES])
def test_result_problem(result: StageResult | None, expected: str | None) -> None:
    assert result_problem(result, SFT_IN) == expected


ADAPTER = "is a LoRA adapter directory (adapter_config.json, no config.json), not a merged model"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"config.json", "model.safetensors", "tokenizer.json"}, None),
        ({"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"}, ADAPTER),
        # A model that also carries an adapter file is loadable: not the mistake this catches.
        ({"config.json", "adapter_config.json"}, None),
        ({"tokenizer.json"}, None),  # not a model at all: loading reports it (no config.json)
    ],
)
def test_model_dir_problem(files: set[str], problem: str | None) -> None:
    found = model_dir_problem(files)
    assert (found is None) == (problem is None)
    if problem:
        assert found is not None and found.startswith(problem)


POLICY = (PADDING, END_OF_TEXT)
CLASSIFIER = (PADDING, END_OF_SCORED_TEXT)
TOKEN_CASES: list[tuple[str, tuple[Any, ...], dict[str, str | None], str | None]] = [
    ("llama-like", POLICY, {"pad_token": None, "eos_token": "</s>", "unk_token": "<unk>"}, None),
    ("policy without eos", POLICY, {"pad_token": "<pad>", "eos_token": None}, "the tokenizer has no eos token"),
    ("no token to pad with", POLICY, {"pad_token": None, "eos_token": None, "unk_token": None}, "no pad or eos or unk"),
    ("encoder as reward model: sep ends texts", CLASSIFIER, {"pad_token": "[PAD]", "sep_token": "[SEP]"}, None),
    ("classifier pads with its end token", CLASSIFIER, {"eos_token": "</s>"}, None),
    ("classifier without end token", CLASSIFIER, {"unk_token": "<unk>"}, "has no eos or sep or pad token"),
    ("ppo reward model only pads", (PADDING,), {"pad_token": "<pad>"}, None),
]


@pytest.mark.parametrize(("needs", "present", "problem"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES])
def test_token_problem(needs: tuple[Any, ...], present: dict[str, str | None], problem: str | None) -> None:
    found = token_problem(needs, present)
    assert (found is None) == (problem is None), found
    if problem:
        assert found is not None and problem in found


def _job(stage: str, **extra: Any) -> TrainerJobConfig:
    section: dict[str, Any] = {"dataset": {"source": "builtin:arithmetic"}} | extra.pop("section", {})
    return TrainerJobConfig.model_validate(
        {
            "stage": stage,
            "runName": "r",
            "model": {"name": "/w/run/sft/merged"},
            "outputDir": f"/w/run/{stage}",
            "workDir": "/w/run",
            stage: section,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (_job("sft"), [("model", "/w/run/sft/merged", POLICY)]),
        (_job("dpo"), [("model", "/w/run/sft/merged", POLICY)]),
        (_job("reward"), [("model", "/w/run/sft/merged", CLASSIFIER)]),
        (
            _job("reward", section={"baseModel": {"name": "minilm"}}),
            [("reward.baseModel", "minilm", CLASSIFIER)],
        ),
        (
            _job("ppo", rewardModel={"name": "/w/run/reward/merged"}),
            [("model", "/w/run/sft/merged", POLICY), ("rewardModel", "/w/run/reward/merged", (PADDING,))],
        ),
    ],
    ids=["sft", "dpo", "reward", "reward on its own base", "ppo"],
)
def test_models_used_and_their_token_needs(cfg: TrainerJobConfig, expected: list[tuple[str, str, Any]]) -> None:
    got = [(field, model.name, token_needs(cfg.stage, field)) for field, model in models_used(cfg)]
    assert got == expected


# ----------------------------------------------------------------------------- with files


def _model_dir(path: Path, eos: bool = True) -> Path:
    """A directory that looks like a merged model: config.json and a tokenizer (eos optional)."""
    tokenizer = word_tokenizer(["a", "b"])
    if not eos:
        tokenizer.eos_token = None
    tokenizer.save_pretrained(path)
    (path / "config.json").write_text("{}")
    return path


def _finished(out: Path, stage: str, **fields: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {"stage": stage, "status": "succeeded", "output_path": str(out), "steps": 4}
    write_result(StageResult(**(values | {"planned_steps": 4} | fields)), str(out / "result.json"))


def _dpo_after_sft(tmp_path: Path, model: Path) -> TrainerJobConfig:
    return TrainerJobConfig.model_validate(
        {
            "stage": "dpo",
            "runName": "r",
            "model": {"name": str(model)},
            "outputDir": str(tmp_path / "dpo"),
            "workDir": str(tmp_path),
            "inputs": [{"stage": "sft", "outputDir": str(tmp_path / "sft"), "role": "model"}],
            "dpo": {"dataset": {"source": "builtin:arithmetic"}},
        }
    )


def test_a_finished_input_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_TERMINATION_LOG", str(tmp_path / "log"))
    _finished(tmp_path / "sft", "sft")
    check_inputs(_dpo_after_sft(tmp_path, _model_dir(tmp_path / "sft" / "merged")))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unfinished", "model.name: input stage 'sft' trained 2 of its 4 planned steps"),
        ("adapter", "model.name: '{model}' is a LoRA adapter directory"),
        ("no eos", "model.name: '{model}': the tokenizer has no eos token"),
    ],
)
def test_a_bad_input_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, message: str
) -> None:
    monkeypatch.setenv("RLHF_TERMINATION_LOG", str(tmp_path / "log"))
    _finished(tmp_path / "sft", "sft", steps=2 if case == "unfinished" else 4)
    model = _model_dir(tmp_path / "sft" / "merged", eos=case != "no eos")
    if case == "adapter":
        model = tmp_path / "sft" / "adapter"
        model.mkdir()
        (model / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(StageError) as info:
        check_inputs(_dpo_after_sft(tmp_path, model))
    assert info.value.kind == "config" and info.value.exit_code == EXIT_CONFIG
    assert str(info.value).startswith(message.format(model=model))


def test_the_trainer_exits_2_before_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rlhf-train dpo` after an SFT stage whose result says failed: exit 2, result.json names the input."""
    monkeypatch.setenv("RLHF_TERMINATION_LOG", str(tmp_path / "log"))
    _finished(tmp_path / "sft", "sft", status="failed", message="preempted (SIGTERM)", preempted=True)
    config = write_config(tmp_path / "dpo.yaml", "dpo", str(tmp_path), tmp_path / "dpo", model=str(tmp_path / "m"))
    raw = yaml.safe_load(config.read_text())
    raw["inputs"] = [{"stage": "sft", "outputDir": str(tmp_path / "sft"), "role": "model"}]
    config.write_text(json.dumps(raw))
    code, result = run_stage_cli("dpo", config)
    assert code == EXIT_CONFIG
    assert result is not None and result.status == "failed" and result.exit_code == EXIT_CONFIG
    assert result.message is not None and result.message.startswith("model.name: input stage 'sft' did not succeed")
