"""Reward sources in the contract: one member per type, labels, and the CRD's copy of the rules."""

from __future__ import annotations

from typing import Any

import cel
import jsonschema
import pytest
from pydantic import ValidationError
from rlhf_api.reward_sources import RewardSource, labels, uses_reward_model
from rlhf_api.validation import format_errors
from rlhf_operator.crd import crd

SOURCE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("reward stage model", {"type": "rewardModel"}, []),
    ("classifier", {"type": "model", "model": {"name": "org/rm"}, "weight": 0.5}, []),
    ("arithmetic", {"type": "builtin", "builtin": "arithmetic"}, []),
    ("exact match", {"type": "builtin", "builtin": "exactMatch", "column": "label", "extract": "lastNumber"}, []),
    ("function", {"type": "function", "function": "my_pkg.rewards:brevity", "weight": -0.1}, []),
    ("model missing", {"type": "model"}, ["model: required when type is model"]),
    ("builtin missing", {"type": "builtin"}, ["builtin: required when type is builtin"]),
    ("function missing", {"type": "function"}, ["function: required when type is function"]),
    (
        "two members",
        {"type": "model", "model": {"name": "m"}, "function": "a:b"},
        ["function: only allowed when type is function (type is model)"],
    ),
    ("member on rewardModel", {"type": "rewardModel", "builtin": "arithmetic"}, ["builtin: only allowed"]),
    ("column on arithmetic", {"type": "builtin", "builtin": "arithmetic", "column": "a"}, ["column: only for"]),
    ("extract on a model", {"type": "model", "model": {"name": "m"}, "extract": "full"}, ["extract: only for"]),
    ("function from the volume", {"type": "function", "function": "rw:f", "pythonPath": "code/rewards"}, []),
    ("pythonPath on a builtin", {"type": "builtin", "builtin": "arithmetic", "pythonPath": "c"}, ["pythonPath: only"]),
]


@pytest.mark.parametrize(("source", "expected"), [c[1:] for c in SOURCE_CASES], ids=[c[0] for c in SOURCE_CASES])
def test_one_member_per_type(source: dict[str, Any], expected: list[str]) -> None:
    try:
        RewardSource.model_validate(source)
        errors: list[str] = []
    except ValidationError as exc:
        errors = format_errors(exc)
    assert len(errors) == len(expected), errors
    for line, start in zip(errors, expected, strict=True):
        assert line.startswith(start), errors


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"type": "function", "function": "no_colon"}, "function"),
        ({"type": "function", "function": "a:b:c"}, "function"),
        ({"type": "function", "function": "pkg.mod:1fn"}, "function"),
        ({"type": "builtin", "builtin": "regex"}, "builtin"),
        ({"type": "script"}, "type"),
        ({"type": "rewardModel", "name": "has space"}, "name"),
        ({"type": "rewardModel", "weight": 1e6}, "weight"),
    ],
)
def test_bad_values_name_the_field(source: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RewardSource.model_validate(source)
    assert format_errors(caught.value)[0].startswith(f"{field}:")


def test_labels_default_and_unique() -> None:
    sources = [
        RewardSource(type="rewardModel"),
        RewardSource.model_validate({"type": "model", "model": {"name": "/workspace/rm/merged/"}}),
        RewardSource(type="builtin", builtin="exactMatch"),
        RewardSource(type="builtin", builtin="exactMatch"),
        RewardSource(type="builtin", builtin="arithmetic", name="exact_match"),
        RewardSource(type="function", function="pkg.mod:brevity"),
    ]
    assert labels(sources) == ["reward_model", "merged", "exact_match", "exact_match_2", "exact_match_3", "brevity"]
    assert uses_reward_model(sources) and not uses_reward_model(sources[1:]) and not uses_reward_model(None)


def _source_schema() -> dict[str, Any]:
    props = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    schema: dict[str, Any] = props["grpo"]["properties"]["rewards"]["items"]
    return schema


@pytest.mark.parametrize("source", [c[1] for c in SOURCE_CASES], ids=[c[0] for c in SOURCE_CASES])
def test_cel_rules_agree_with_pydantic(source: dict[str, Any]) -> None:
    """The API server rejects exactly the sources `rlhf validate` rejects."""
    schema = _source_schema()
    jsonschema.Draft4Validator(schema).validate(source)  # CEL runs on schema-valid objects only
    cel_ok = all(cel.evaluate(r["rule"], {"self": source}) for r in schema["x-kubernetes-validations"])
    try:
        RewardSource.model_validate(source)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert cel_ok == model_ok


def test_rloo_sources_share_the_rules() -> None:
    props = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["rloo"]["properties"]["rewards"]["items"] == _source_schema()
    assert props["grpo"]["properties"]["rewards"]["maxItems"] == 8
