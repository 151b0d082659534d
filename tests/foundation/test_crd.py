"""The generated CRD: checked in, structural, described, and its CEL rules agree with pydantic."""

from __future__ import annotations

from typing import Any

import cel
import jsonschema
import pytest
import yaml
from rlhf_api.validation import RunInvalid, parse_run
from rlhf_operator.crd import CRD_PATH, crd, crd_yaml

from .conftest import EXAMPLES, REPO, spec_with


def _version() -> dict[str, Any]:
    version: dict[str, Any] = crd()["spec"]["versions"][0]
    return version


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = _version()["schema"]["openAPIV3Schema"]
    return schema


def test_checked_in_crd_matches_the_models() -> None:
    checked_in = (REPO / CRD_PATH).read_text()
    assert checked_in == crd_yaml(), f"{CRD_PATH} is stale: run `rlhf crd -o {CRD_PATH}`"


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural_and_described() -> None:
    for path, node in _walk(_schema()):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "const", "$defs", "title"):
            assert key not in node, f"{path}: {key} is not allowed in a structural schema"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path}: no type"
        if "properties" in node:
            assert node["type"] == "object" and "additionalProperties" not in node, path
        if path.count(".") >= 1 and not path.endswith(("[]", "}")):
            assert node.get("description"), f"{path}: no description (kubectl explain shows nothing)"


def test_crd_shape() -> None:
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["rlhf"] and spec["scope"] == "Namespaced"
    assert _version()["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Stage"] == ".status.currentStage"
    assert columns["Age"] == ".metadata.creationTimestamp"
    props = _schema()["properties"]["spec"]["properties"]
    assert {r["rule"] for r in props["model"]["x-kubernetes-validations"]} == {"self == oldSelf"}
    assert {r["rule"] for r in props["pipeline"]["x-kubernetes-validations"]} == {"self == oldSelf"}
    assert props["launcher"]["enum"] == ["pytorchjob", "trainjob"]
    assert props["sft"]["properties"]["lora"]["properties"]["r"]["minimum"] == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_valid_against_crd_and_models(path: Any) -> None:
    document = yaml.safe_load(path.read_text())
    jsonschema.Draft4Validator(_schema()).validate(document)  # boolean exclusive bounds: draft 4
    parse_run(document)
    for rule in _schema()["properties"]["spec"]["x-kubernetes-validations"]:
        assert cel.evaluate(rule["rule"], {"self": document["spec"]}) is True, rule["message"]


DPO = {"dataset": {"source": "d"}}
GROUP_RL: dict[str, Any] = {"dataset": {"source": "builtin:arithmetic"}}
ARITH = {"type": "builtin", "builtin": "arithmetic"}
RM = {"type": "rewardModel"}
CEL_CASES = [
    spec_with(),
    spec_with(pipeline=["sft", "ppo"]),
    spec_with(pipeline=["ppo"]),
    spec_with(pipeline=["ppo"], sft={"existingOutput": "/s"}, reward={"existingOutput": "/r"}),
    spec_with(pipeline=["sft", "reward", "dpo"], dpo=DPO),
    spec_with(pipeline=["sft", "dpo"], dpo=DPO, reward=None, ppo=None),
    spec_with(pipeline=["reward", "sft"]),
    spec_with(reward=None),
    spec_with(sft={"lora": {"r": 4}}),
    spec_with(sft={"existingOutput": "/s"}),
    spec_with(pipeline=["sft", "sft"], reward=None, ppo=None),
    # grpo / rloo: the reward stage's model as a source needs the reward stage (or its output)
    spec_with(pipeline=["sft", "reward", "grpo"], ppo=None, grpo=GROUP_RL),
    spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo=GROUP_RL),
    spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo={**GROUP_RL, "rewards": [ARITH]}),
    spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo={**GROUP_RL, "rewards": [ARITH, RM]}),
    spec_with(pipeline=["sft", "grpo"], reward={"existingOutput": "/rm"}, ppo=None, grpo={**GROUP_RL, "rewards": [RM]}),
    spec_with(pipeline=["grpo"], sft=None, reward=None, ppo=None, grpo={**GROUP_RL, "rewards": [ARITH]}),
    spec_with(pipeline=["sft", "reward", "rloo"], ppo=None, rloo={**GROUP_RL, "rewards": [RM, ARITH]}),
    spec_with(pipeline=["rloo"], sft=None, reward=None, ppo=None, rloo=GROUP_RL),
    spec_with(pipeline=["rloo"], sft=None, reward=None, ppo=None, rloo={**GROUP_RL, "existingOutput": "/p"}),
    spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None),
    spec_with(pipeline=["sft", "grpo", "rloo"], reward=None, ppo=None, grpo=GROUP_RL, rloo=GROUP_RL),
    spec_with(pipeline=["sft", "reward", "grpo"], grpo=GROUP_RL),
    spec_with(placement={"strategy": "fsdp", "fsdpOffload": True}),
    spec_with(placement={"strategy": "fsdp"}, sft={"dataset": {"source": "d"}, "quantization": {"mode": "8bit"}}),
    spec_with(sft={"dataset": {"source": "d"}, "quantization": {"mode": "8bit"}, "placement": {"strategy": "fsdp"}}),
    spec_with(
        sft={"dataset": {"source": "d"}, "quantization": {"mode": "4bit-nf4"}, "placement": {"strategy": "fsdp"}}
    ),
    spec_with(placement={"strategy": "fsdp"}, sft={"existingOutput": "/s", "quantization": {"mode": "8bit"}}),
    spec_with(placement={"fsdpOffload": True}),
    spec_with(placement={"fsdpOffload": True}, sft={"dataset": {"source": "d"}, "placement": {"strategy": "fsdp"}}),
    spec_with(
        placement={"fsdpOffload": True, "strategy": "fsdp"},
        ppo={"dataset": {"source": "d"}, "placement": {"fsdpOffload": False, "strategy": "ddp"}},
    ),
]


@pytest.mark.parametrize("document", CEL_CASES)
def test_cel_rules_agree_with_pydantic(document: dict[str, Any]) -> None:
    """The API server's CEL verdict on cross-field rules is the same as `rlhf validate`'s."""
    rules = _schema()["properties"]["spec"]["x-kubernetes-validations"]
    cel_ok = all(cel.evaluate(r["rule"], {"self": document["spec"]}) for r in rules)
    try:
        parse_run(document)
        model_ok = True
    except RunInvalid:
        model_ok = False
    assert cel_ok == model_ok


def test_ppo_batch_rule_in_cel() -> None:
    rules = _schema()["properties"]["spec"]["properties"]["ppo"]["properties"]["training"]["x-kubernetes-validations"]
    bad = {"batchSize": 4, "miniBatchSize": 8}
    assert not all(cel.evaluate(r["rule"], {"self": bad}) for r in rules)
    assert all(cel.evaluate(r["rule"], {"self": {"batchSize": 8}}) for r in rules)


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
@pytest.mark.parametrize(
    ("training", "fits"),
    [
        ({}, True),
        ({"batchSize": 12}, False),
        ({"batchSize": 12, "numGenerations": 4}, True),
        ({"batchSize": 4, "gradientAccumulationSteps": 2}, True),
        ({"batchSize": 4, "gradientAccumulationSteps": 3}, False),
        ({"numGenerations": 16, "gradientAccumulationSteps": 2}, True),
        ({"numGenerations": 3}, False),
    ],
)
def test_group_fit_rule_in_cel(stage: str, training: dict[str, Any], fits: bool) -> None:
    """CEL sees no defaults: its rule fills them in, and agrees with the pydantic check."""
    node = _schema()["properties"]["spec"]["properties"][stage]["properties"]["training"]
    assert all(cel.evaluate(r["rule"], {"self": training}) for r in node["x-kubernetes-validations"]) is fits
    document = spec_with(pipeline=["sft", stage], reward=None, ppo=None)
    document["spec"][stage] = {**GROUP_RL, "rewards": [ARITH], "training": training}
    try:
        parse_run(document)
        model_ok = True
    except RunInvalid:
        model_ok = False
    assert model_ok is fits


@pytest.mark.parametrize(
    ("training", "valid"),
    [
        ({"miniBatchSize": 4, "microBatchSize": 2}, True),
        ({"miniBatchSize": 4, "microBatchSize": 4}, True),
        ({"miniBatchSize": 4, "microBatchSize": 8}, False),
        ({"microBatchSize": 17}, False),  # above the default miniBatchSize (16)
        ({"microBatchSize": 16}, True),
        ({"batchSize": 8, "miniBatchSize": 4, "rolloutBatchSize": 4}, True),
        ({"batchSize": 8, "miniBatchSize": 4, "rolloutBatchSize": 9}, False),
        ({"rolloutBatchSize": 65}, False),  # above the default batchSize (64)
    ],
)
def test_ppo_memory_rules_in_cel_agree_with_pydantic(training: dict[str, Any], valid: bool) -> None:
    from rlhf_api.stages.ppo import PPOTrainingConfig

    rules = _schema()["properties"]["spec"]["properties"]["ppo"]["properties"]["training"]["x-kubernetes-validations"]
    assert all(cel.evaluate(r["rule"], {"self": training}) for r in rules) == valid
    try:
        PPOTrainingConfig.model_validate(training)
        model_ok = True
    except ValueError:
        model_ok = False
    assert model_ok == valid
