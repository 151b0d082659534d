"""Each cross-field rule of rlhf_api.rules, its Python check and its CEL twin, fed the same cases.

One row: a spec, the rule, and whether the spec breaks it. The Python side is `rlhf validate`'s
(pydantic, an error naming the rule); the CEL side is the CRD's rule(s) of that name, evaluated
as the API server would. Both must give the expected verdict, so the twins cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import cel
import pytest
from pydantic import ValidationError
from rlhf_api.rules import ALLOWED_PIPELINES, PIPELINE_SHAPES, pipeline_shapes, spec_cel_rules
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_api.validation import RunInvalid, parse_run

from .conftest import spec_with

# rule -> (a fragment of the Python error, a fragment of the CEL rule's message)
RULES = {
    "8bit-fsdp": ("8bit weights cannot be sharded", "8bit weights cannot be sharded"),
    "offload-fsdp": ("needs strategy fsdp", "fsdpOffload needs strategy fsdp"),
    "ppo-reward": ("ppo needs a reward model", "ppo needs a reward model"),
    "ppo-sft": ("ppo needs an SFT model", "ppo needs an SFT model"),
    "reward-source": ("reward stage's model", "uses the reward stage's model"),
    "rlaif-no-model": ("writes preference pairs, not a model", "writes preference pairs, not a model"),
    "rlaif-source": ("names the pairs of an rlaif stage", "names the pairs of an rlaif stage"),
    "after-rlaif": ("follows rlaif and trains on its pairs", "follows rlaif and trains on its pairs"),
}

D = {"source": "d"}
ARITH = {"type": "builtin", "builtin": "arithmetic"}
RM = {"type": "rewardModel"}
GRPO = {"dataset": {"source": "builtin:arithmetic"}}
RLAIF = {"dataset": {"source": "builtin:arithmetic"}, "judge": {"name": "builtin:arithmetic-judge"}}

CASES: list[tuple[str, dict[str, Any], bool]] = [
    # 8-bit weights cannot be sharded: fsdp from the run's placement or the stage's own
    (
        "8bit-fsdp",
        spec_with(placement={"strategy": "fsdp"}, sft={"dataset": D, "quantization": {"mode": "8bit"}}),
        True,
    ),
    (
        "8bit-fsdp",
        spec_with(sft={"dataset": D, "quantization": {"mode": "8bit"}, "placement": {"strategy": "fsdp"}}),
        True,
    ),
    (
        "8bit-fsdp",
        spec_with(sft={"dataset": D, "quantization": {"mode": "4bit-nf4"}, "placement": {"strategy": "fsdp"}}),
        False,
    ),
    (
        "8bit-fsdp",
        spec_with(
            placement={"strategy": "fsdp"},
            sft={"dataset": D, "quantization": {"mode": "8bit"}, "placement": {"strategy": "ddp"}},
        ),
        False,
    ),
    (
        "8bit-fsdp",
        spec_with(placement={"strategy": "fsdp"}, sft={"existingOutput": "/s", "quantization": {"mode": "8bit"}}),
        False,
    ),
    # fsdpOffload needs fsdp (the stage's own setting wins over the run's)
    ("offload-fsdp", spec_with(placement={"fsdpOffload": True}), True),
    ("offload-fsdp", spec_with(placement={"strategy": "fsdp", "fsdpOffload": True}), False),
    (
        "offload-fsdp",
        spec_with(placement={"fsdpOffload": True}, sft={"dataset": D, "placement": {"strategy": "fsdp"}}),
        True,
    ),
    (
        "offload-fsdp",
        spec_with(
            placement={"fsdpOffload": True, "strategy": "fsdp"},
            ppo={"dataset": D, "placement": {"fsdpOffload": False, "strategy": "ddp"}},
        ),
        False,
    ),
    (
        "offload-fsdp",
        spec_with(
            placement={"strategy": "fsdp"}, sft={"dataset": D, "placement": {"fsdpOffload": True, "strategy": "ddp"}}
        ),
        True,
    ),
    # ppo's `requires`: the reward and SFT models, from the pipeline or existingOutput
    ("ppo-reward", spec_with(pipeline=["sft", "ppo"], reward=None), True),
    ("ppo-reward", spec_with(pipeline=["sft", "ppo"], reward={"existingOutput": "/r"}), False),
    ("ppo-reward", spec_with(), False),
    ("ppo-sft", spec_with(pipeline=["reward", "ppo"], sft=None), True),
    ("ppo-sft", spec_with(pipeline=["reward", "ppo"], sft={"existingOutput": "/s"}), False),
    ("ppo-sft", spec_with(pipeline=["ppo"], sft={"existingOutput": "/s"}, reward={"existingOutput": "/r"}), False),
    # a rewardModel source (the default) needs the reward stage's model
    ("reward-source", spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo=GRPO), True),
    (
        "reward-source",
        spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo={**GRPO, "rewards": [ARITH, RM]}),
        True,
    ),
    (
        "reward-source",
        spec_with(pipeline=["sft", "grpo"], reward=None, ppo=None, grpo={**GRPO, "rewards": [ARITH]}),
        False,
    ),
    (
        "reward-source",
        spec_with(pipeline=["sft", "grpo"], reward={"existingOutput": "/r"}, ppo=None, grpo={**GRPO, "rewards": [RM]}),
        False,
    ),
    ("reward-source", spec_with(pipeline=["sft", "reward", "rloo"], ppo=None, rloo={**GRPO, "rewards": [RM]}), False),
    ("reward-source", spec_with(pipeline=["rest"], sft=None, reward=None, ppo=None, rest=GRPO), True),
    # rlaif writes pairs: no existingOutput; `source: rlaif` only right after it; after it, only its pairs
    (
        "rlaif-no-model",
        spec_with(
            pipeline=["sft", "rlaif", "dpo"], reward=None, ppo=None, rlaif={**RLAIF, "existingOutput": "/x"}, dpo={}
        ),
        True,
    ),
    ("rlaif-no-model", spec_with(pipeline=["sft", "rlaif", "dpo"], reward=None, ppo=None, rlaif=RLAIF, dpo={}), False),
    (
        "rlaif-source",
        spec_with(pipeline=["sft", "dpo"], reward=None, ppo=None, dpo={"dataset": {"source": "rlaif"}}),
        True,
    ),
    (
        "rlaif-source",
        spec_with(
            pipeline=["sft", "rlaif", "dpo"], reward=None, ppo=None, rlaif=RLAIF, dpo={"dataset": {"source": "rlaif"}}
        ),
        False,
    ),
    (
        "after-rlaif",
        spec_with(pipeline=["sft", "rlaif", "dpo"], reward=None, ppo=None, rlaif=RLAIF, dpo={"dataset": D}),
        True,
    ),
    ("after-rlaif", spec_with(pipeline=["sft", "rlaif", "reward"], ppo=None, rlaif=RLAIF, reward={}), False),
]


def _python_breaks(document: dict[str, Any], fragment: str) -> bool:
    try:
        parse_run(document)
    except RunInvalid as invalid:
        return any(fragment in error for error in invalid.errors)
    return False


def _cel_breaks(document: dict[str, Any], fragment: str) -> bool:
    rules = [r for r in spec_cel_rules() if fragment in r["message"]]
    assert rules, f"no CEL rule says '{fragment}'"
    return not all(cel.evaluate(r["rule"], {"self": document["spec"]}) for r in rules)


@pytest.mark.parametrize(("rule", "document", "breaks"), CASES)
def test_python_check_and_cel_twin_agree(rule: str, document: dict[str, Any], breaks: bool) -> None:
    python_fragment, cel_fragment = RULES[rule]
    assert _python_breaks(document, python_fragment) is breaks
    assert _cel_breaks(document, cel_fragment) is breaks


def test_every_rule_has_cases_both_ways() -> None:
    for rule in RULES:
        assert {breaks for name, _, breaks in CASES if name == rule} == {True, False}, rule


# ---- the trainer's file (TrainerJobConfig): what the trainer relies on instead of checking again


def _job(stage: str, section: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"stage": stage, "runName": "r", "model": {"name": "m"}, "outputDir": "/o", "workDir": "/w"} | {
        stage: section,
        **fields,
    }


@pytest.mark.parametrize(
    ("job", "error"),
    [
        (_job("ppo", {"dataset": D}), "rewardModel is required for the ppo stage"),
        (_job("grpo", {**GRPO, "rewards": [ARITH, RM]}), "rewardModel: required, a grpo.rewards source"),
        (_job("rest", GRPO), "rewardModel: required, a rest.rewards source"),
        (_job("grpo", {**GRPO, "rewards": [ARITH]}), None),
        (_job("ppo", {"dataset": D}, rewardModel={"name": "rm"}), None),
        (_job("sft", {"dataset": D}, fsdpOffload=True), "fsdpOffload needs strategy fsdp"),
        (_job("sft", {"dataset": D, "quantization": {"mode": "8bit"}}, strategy="fsdp"), "8bit weights cannot be"),
        (_job("sft", {"dataset": D, "quantization": {"mode": "4bit-nf4"}}, strategy="fsdp", fsdpOffload=True), None),
        (_job("sft", {"dataset": D}, dpo={"dataset": D}), "exactly the 'sft' section must be set"),
    ],
)
def test_trainer_job_config_guarantees(job: dict[str, Any], error: str | None) -> None:
    if error is None:
        TrainerJobConfig.model_validate(job)
    else:
        with pytest.raises(ValidationError, match=error):
            TrainerJobConfig.model_validate(job)


@pytest.mark.parametrize(
    ("pipelines", "shapes"),
    [
        ([["sft"]], "[sft]"),
        ([["dpo"], ["sft", "dpo"]], "[dpo], [sft, dpo]"),
        (
            [["ppo"], ["sft", "ppo"], ["sft", "dpo"], ["sft", "reward", "ppo"]],
            "[ppo], [sft, ppo|dpo], [sft, reward, ppo]",
        ),
    ],
)
def test_pipeline_shapes_group_pipelines_by_all_but_their_last_stage(pipelines: list[list[str]], shapes: str) -> None:
    assert pipeline_shapes(pipelines) == shapes


def test_pipeline_shapes_name_every_accepted_pipeline() -> None:
    """The prose comes from the registry: expanding each group gives back ALLOWED_PIPELINES exactly."""
    expanded = []
    for group in PIPELINE_SHAPES.removeprefix("[").removesuffix("]").split("], ["):
        *prefix, lasts = group.split(", ")
        expanded += [[*prefix, last] for last in lasts.split("|")]
    assert sorted(expanded) == sorted(ALLOWED_PIPELINES)
