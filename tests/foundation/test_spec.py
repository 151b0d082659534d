"""The RLHFRun model: defaults, bounds, cross-field rules, field-named errors."""

from __future__ import annotations

from typing import Any

import pytest
from rlhf_api.spec import RLHFRun
from rlhf_api.validation import RunInvalid, parse_run

from .conftest import MINIMAL, spec_with

GROUP_RL: dict[str, Any] = {"dataset": {"source": "builtin:arithmetic"}}
ARITH = {"type": "builtin", "builtin": "arithmetic"}
RM = {"type": "rewardModel"}


def test_defaults() -> None:
    run = parse_run(MINIMAL)
    assert run.spec.pipeline == ["sft", "reward", "ppo"]
    assert run.spec.model.trust_remote_code is False
    assert run.spec.storage.retention == "Retain"
    assert run.spec.launcher == "pytorchjob"
    assert run.spec.sft is not None and (run.spec.sft.lora.r, run.spec.sft.lora.alpha) == (16, 32)
    assert run.spec.reward is not None and (run.spec.reward.lora.r, run.spec.reward.lora.dropout) == (8, 0.1)


ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("wrong enum", spec_with(launcher="job"), "spec.launcher:"),
    ("missing model", spec_with(model=None), "spec.model: Field required"),
    ("ppo without reward", spec_with(pipeline=["sft", "ppo"]), "spec.pipeline: ppo needs a reward model"),
    ("ppo alone", spec_with(pipeline=["ppo"]), "spec.pipeline: ppo needs an SFT model"),
    ("dpo after reward", spec_with(pipeline=["sft", "reward", "dpo"]), "spec.pipeline:"),
    ("unordered", spec_with(pipeline=["reward", "sft"]), "spec.pipeline:"),
    ("duplicate stage", spec_with(pipeline=["sft", "sft"]), "spec.pipeline:"),
    ("unknown stage", spec_with(pipeline=["sft", "rlhf"]), "spec.pipeline[1]:"),
    (
        "negative lora rank",
        spec_with(sft={"dataset": {"source": "d"}, "lora": {"r": -4}}),
        "spec.sft.lora.r: Input should be greater than or equal to 1",
    ),
    (
        "literal secret",
        spec_with(secrets={"hfToken": "hf_abcdefghijklmnopqrstuvwxyz012345"}),
        "spec.secrets.hfToken: must be a reference to a Secret",
    ),
    ("unknown field", spec_with(gpus=8), "spec.gpus: Extra inputs are not permitted"),
    ("stage section missing", spec_with(reward=None), "spec.reward: the pipeline runs 'reward'"),
    (
        "dataset missing",
        spec_with(sft={"lora": {"r": 8}}),
        "spec.sft.dataset: required unless sft.existingOutput is set",
    ),
    (
        "ppo batch sizes",
        spec_with(ppo={"dataset": {"source": "d"}, "training": {"batchSize": 4, "miniBatchSize": 8}}),
        "spec.ppo.training: miniBatchSize must not exceed batchSize",
    ),
    ("bad quantity", spec_with(storage={"size": "lots"}), "spec.storage.size:"),
    ("wandb without key", spec_with(wandbProject="p"), "spec.wandbProject: needs secrets.wandbApiKey"),
    (
        "bad accelerator",
        spec_with(placement={"nodePool": {"accelerator": "tpu"}}),
        "spec.placement.nodePool.accelerator:",
    ),
    (
        "grpo's default reward source without a reward stage",
        spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo=GROUP_RL),
        "spec.grpo.rewards: the default source is the reward stage's model",
    ),
    (
        "rloo's rewardModel source without a reward stage",
        spec_with(pipeline=["rloo"], sft=None, reward=None, ppo=None, rloo={**GROUP_RL, "rewards": [ARITH, RM]}),
        "spec.rloo.rewards[1].type: rewardModel needs the reward stage's model",
    ),
    (
        "source type without its member",
        spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo={**GROUP_RL, "rewards": [{"type": "model"}]}),
        "spec.grpo.rewards[0].model: required when type is model",
    ),
    (
        "function path without a function",
        spec_with(
            pipeline=["grpo"],
            sft=None,
            reward=None,
            ppo=None,
            grpo={**GROUP_RL, "rewards": [{"type": "function", "function": "mod"}]},
        ),
        "spec.grpo.rewards[0].function:",
    ),
    (
        "groups do not fit the batch",
        spec_with(
            pipeline=["sft", "rloo"],
            reward=None,
            ppo=None,
            rloo={**GROUP_RL, "rewards": [ARITH], "training": {"batchSize": 12}},
        ),
        "spec.rloo.training: batchSize x gradientAccumulationSteps must be a multiple of numGenerations",
    ),
    ("grpo and rloo together", spec_with(pipeline=["sft", "grpo", "rloo"]), "spec.pipeline:"),
    ("grpo before reward", spec_with(pipeline=["sft", "grpo", "reward"]), "spec.pipeline:"),
    (
        "unknown loss type",
        spec_with(grpo={**GROUP_RL, "training": {"lossType": "ppo"}}),
        "spec.grpo.training.lossType:",
    ),
    (
        "rloo has no group scaling",
        spec_with(rloo={**GROUP_RL, "training": {"scaleRewards": "group"}}),
        "spec.rloo.training.scaleRewards:",
    ),
    ("bad strategy", spec_with(placement={"strategy": "zero3"}), "spec.placement.strategy:"),
    (
        "8bit sharded by the run's strategy",
        spec_with(placement={"strategy": "fsdp"}, ppo={"dataset": {"source": "d"}, "quantization": {"mode": "8bit"}}),
        "spec.ppo.quantization.mode: 8bit weights cannot be sharded (placement.strategy is fsdp)",
    ),
    (
        "8bit sharded by the stage's strategy",
        spec_with(
            sft={"dataset": {"source": "d"}, "quantization": {"mode": "8bit"}, "placement": {"strategy": "fsdp"}}
        ),
        "spec.sft.quantization.mode: 8bit weights cannot be sharded (sft.placement.strategy is fsdp)",
    ),
    (
        "offload without fsdp",
        spec_with(placement={"fsdpOffload": True}),
        "spec.placement.fsdpOffload: needs strategy fsdp (sft runs with ddp)",
    ),
    (
        "stage offload, run fsdp, stage ddp",
        spec_with(
            placement={"strategy": "fsdp"},
            reward={"dataset": {"source": "d"}, "placement": {"strategy": "ddp", "fsdpOffload": True}},
        ),
        "spec.reward.placement.fsdpOffload: needs strategy fsdp (reward runs with ddp)",
    ),
]


@pytest.mark.parametrize(("document", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_field(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(RunInvalid) as caught:
        parse_run(document)
    assert any(line.startswith(expected) or expected in line for line in caught.value.errors), caught.value.errors


def test_every_error_is_reported_at_once() -> None:
    document = spec_with(launcher="job", secrets={"hfToken": "literal"}, model=None)
    with pytest.raises(RunInvalid) as caught:
        parse_run(document)
    assert len(caught.value.errors) == 3


@pytest.mark.parametrize(
    "pipeline",
    [
        ["sft", "reward", "ppo"],
        ["sft", "dpo"],
        ["dpo"],
        ["sft"],
        ["sft", "reward"],
        ["sft", "reward", "grpo"],
        ["sft", "grpo"],
        ["grpo"],
        ["sft", "reward", "rloo"],
        ["sft", "rloo"],
        ["rloo"],
    ],
)
def test_allowed_pipelines(pipeline: list[str]) -> None:
    document = spec_with(pipeline=pipeline)
    document["spec"]["dpo"] = {"dataset": {"source": "d", "format": "preference"}}
    # with a reward stage the default source (its model) applies; without, a verifiable reward
    rewards = {} if "reward" in pipeline else {"rewards": [ARITH]}
    document["spec"]["grpo"] = document["spec"]["rloo"] = {**GROUP_RL, **rewards}
    for stage in ("sft", "reward", "ppo", "dpo", "grpo", "rloo"):
        if stage not in pipeline:
            document["spec"].pop(stage)
    assert parse_run(document).spec.pipeline == pipeline


def test_reward_model_source_from_an_existing_reward_model() -> None:
    document = spec_with(pipeline=["sft", "grpo"], ppo=None, grpo=GROUP_RL, reward={"existingOutput": "/rm"})
    run = parse_run(document)
    assert run.spec.grpo is not None and [s.type for s in run.spec.grpo.rewards] == ["rewardModel"]


def test_group_rl_defaults() -> None:
    run = parse_run(spec_with(pipeline=["sft", "reward", "grpo"], ppo=None, grpo=GROUP_RL))
    assert run.spec.grpo is not None
    training = run.spec.grpo.training
    assert (training.beta, training.loss_type, training.scale_rewards) == (0.0, "dapo", "group")
    assert (training.num_generations, training.batch_size, training.logging_steps) == (8, 8, 1)


def test_stage_skipped_by_existing_output() -> None:
    document = spec_with(pipeline=["reward", "ppo"])
    document["spec"]["sft"] = {"existingOutput": "/workspace/old/sft/merged"}
    run = RLHFRun.model_validate(document)
    assert run.spec.provided("sft") and not run.spec.provided("reward")
