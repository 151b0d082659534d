"""The RLHFRun model: defaults, bounds, cross-field rules, field-named errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rlhf_operator.spec import RLHFRun
from rlhf_operator.validation import RunInvalid, parse_run

from .conftest import MINIMAL


def with_spec(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            document["spec"].pop(key, None)
        else:
            document["spec"][key] = value
    return document


def test_defaults() -> None:
    run = parse_run(MINIMAL)
    assert run.spec.pipeline == ["sft", "reward", "ppo"]
    assert run.spec.model.trust_remote_code is False
    assert run.spec.storage.retention == "Retain"
    assert run.spec.launcher == "pytorchjob"
    assert run.spec.sft is not None and (run.spec.sft.lora.r, run.spec.sft.lora.alpha) == (16, 32)
    assert run.spec.reward is not None and (run.spec.reward.lora.r, run.spec.reward.lora.dropout) == (8, 0.1)


ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("wrong enum", with_spec(launcher="job"), "spec.launcher:"),
    ("missing model", with_spec(model=None), "spec.model: Field required"),
    ("ppo without reward", with_spec(pipeline=["sft", "ppo"]), "spec.pipeline: ppo needs a reward model"),
    ("ppo alone", with_spec(pipeline=["ppo"]), "spec.pipeline: ppo needs an SFT model"),
    ("dpo after reward", with_spec(pipeline=["sft", "reward", "dpo"]), "spec.pipeline:"),
    ("unordered", with_spec(pipeline=["reward", "sft"]), "spec.pipeline:"),
    ("duplicate stage", with_spec(pipeline=["sft", "sft"]), "spec.pipeline:"),
    ("unknown stage", with_spec(pipeline=["sft", "rlhf"]), "spec.pipeline[1]:"),
    (
        "negative lora rank",
        with_spec(sft={"dataset": {"source": "d"}, "lora": {"r": -4}}),
        "spec.sft.lora.r: Input should be greater than or equal to 1",
    ),
    (
        "literal secret",
        with_spec(secrets={"hfToken": "hf_abcdefghijklmnopqrstuvwxyz012345"}),
        "spec.secrets.hfToken: must be a reference to a Secret",
    ),
    ("unknown field", with_spec(gpus=8), "spec.gpus: Extra inputs are not permitted"),
    ("stage section missing", with_spec(reward=None), "spec.reward: the pipeline runs 'reward'"),
    (
        "dataset missing",
        with_spec(sft={"lora": {"r": 8}}),
        "spec.sft.dataset: required unless sft.existingOutput is set",
    ),
    (
        "ppo batch sizes",
        with_spec(ppo={"dataset": {"source": "d"}, "training": {"batchSize": 4, "miniBatchSize": 8}}),
        "spec.ppo.training: miniBatchSize must not exceed batchSize",
    ),
    ("bad quantity", with_spec(storage={"size": "lots"}), "spec.storage.size:"),
    ("wandb without key", with_spec(wandbProject="p"), "spec.wandbProject: needs secrets.wandbApiKey"),
    (
        "bad accelerator",
        with_spec(placement={"nodePool": {"accelerator": "tpu"}}),
        "spec.placement.nodePool.accelerator:",
    ),
]


@pytest.mark.parametrize(("document", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_field(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(RunInvalid) as caught:
        parse_run(document)
    assert any(line.startswith(expected) or expected in line for line in caught.value.errors), caught.value.errors


def test_every_error_is_reported_at_once() -> None:
    document = with_spec(launcher="job", secrets={"hfToken": "literal"}, model=None)
    with pytest.raises(RunInvalid) as caught:
        parse_run(document)
    assert len(caught.value.errors) == 3


@pytest.mark.parametrize("pipeline", [["sft", "reward", "ppo"], ["sft", "dpo"], ["dpo"], ["sft"], ["sft", "reward"]])
def test_allowed_pipelines(pipeline: list[str]) -> None:
    document = with_spec(pipeline=pipeline)
    document["spec"]["dpo"] = {"dataset": {"source": "d", "format": "preference"}}
    for stage in ("sft", "reward", "ppo", "dpo"):
        if stage not in pipeline:
            document["spec"].pop(stage)
    assert parse_run(document).spec.pipeline == pipeline


def test_stage_skipped_by_existing_output() -> None:
    document = with_spec(pipeline=["reward", "ppo"])
    document["spec"]["sft"] = {"existingOutput": "/workspace/old/sft/merged"}
    run = RLHFRun.model_validate(document)
    assert run.spec.provided("sft") and not run.spec.provided("reward")
