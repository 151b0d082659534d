"""ReST and RLAIF in the contract: pipelines, field-named errors, the CRD's CEL copies, plan wiring."""

from __future__ import annotations

import copy
from typing import Any

import cel
import pytest
from rlhf_api.trainer_job import TrainerJobConfig
from rlhf_api.validation import RunInvalid, parse_run
from rlhf_operator.crd import crd
from rlhf_operator.plan import plan

from .conftest import MINIMAL

ARITHMETIC = {"source": "builtin:arithmetic"}
RLAIF = {"dataset": ARITHMETIC, "judge": {"name": "org/judge-70b"}}
REST = {"dataset": ARITHMETIC}


def run_doc(pipeline: list[str], **sections: Any) -> dict[str, Any]:
    """MINIMAL with this pipeline and only these stage sections (sft from MINIMAL unless given)."""
    document = copy.deepcopy(MINIMAL)
    spec = {"model": document["spec"]["model"], "pipeline": pipeline}
    if "sft" in pipeline:
        spec["sft"] = document["spec"]["sft"]
    if "reward" in pipeline:
        spec["reward"] = document["spec"]["reward"]
    if "ppo" in pipeline:
        spec["ppo"] = document["spec"]["ppo"]
    spec.update({k: v for k, v in sections.items() if v is not None})
    for key in [k for k, v in sections.items() if v is None]:
        spec.pop(key, None)
    document["spec"] = spec
    return document


VALID: list[tuple[str, dict[str, Any]]] = [
    ("sft reward rest", run_doc(["sft", "reward", "rest"], rest=REST)),
    (
        "sft rest with a verifiable reward",
        run_doc(["sft", "rest"], rest={**REST, "rewards": [{"type": "builtin", "builtin": "arithmetic"}]}),
    ),
    ("rest after an existing reward model", run_doc(["rest"], rest=REST, reward={"existingOutput": "/r"})),
    ("sft rlaif dpo, dpo data omitted", run_doc(["sft", "rlaif", "dpo"], rlaif=RLAIF, dpo={})),
    (
        "sft rlaif dpo, dpo data named rlaif",
        run_doc(["sft", "rlaif", "dpo"], rlaif=RLAIF, dpo={"dataset": {"source": "rlaif", "evalFraction": 0.1}}),
    ),
    ("sft rlaif reward ppo", run_doc(["sft", "rlaif", "reward", "ppo"], rlaif=RLAIF, reward={})),
    ("sft rlaif reward rest", run_doc(["sft", "rlaif", "reward", "rest"], rlaif=RLAIF, reward={}, rest=REST)),
]

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("rlaif before ppo", run_doc(["sft", "rlaif", "ppo"], rlaif=RLAIF), "spec.pipeline: "),
    ("rlaif last", run_doc(["sft", "rlaif"], rlaif=RLAIF), "spec.pipeline: "),
    ("rest not last", run_doc(["sft", "rest", "reward"], rest=REST), "spec.pipeline: "),
    ("rest with dpo", run_doc(["sft", "dpo", "rest"], rest=REST, dpo={"dataset": ARITHMETIC}), "spec.pipeline: "),
    (
        "rest without a reward model",
        run_doc(["sft", "rest"], rest=REST),
        "spec.rest.rewards: the default source is the reward stage's model",
    ),
    (
        "dpo after rlaif with its own data",
        run_doc(["sft", "rlaif", "dpo"], rlaif=RLAIF, dpo={"dataset": {"source": "pairs.jsonl"}}),
        "spec.dpo.dataset.source: 'dpo' follows rlaif",
    ),
    (
        "rlaif source without rlaif",
        run_doc(["sft", "dpo"], dpo={"dataset": {"source": "rlaif"}}),
        "spec.dpo.dataset.source: 'rlaif' names the pairs of an rlaif stage",
    ),
    (
        "rlaif existing output",
        run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "existingOutput": "/p"}, dpo={}),
        "spec.rlaif.existingOutput: rlaif writes preference pairs",
    ),
    ("rlaif without prompts", run_doc(["sft", "rlaif", "dpo"], rlaif={"judge": RLAIF["judge"]}, dpo={}), "spec.rlaif."),
    (
        "judge template without responses",
        run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "judgeTemplate": "{constitution} {prompt}"}, dpo={}),
        "spec.rlaif.judgeTemplate: must contain {response_a}, {response_b}",
    ),
    (
        "same labels",
        run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "labels": ["1", "1"]}, dpo={}),
        "spec.rlaif.labels: the two labels must differ",
    ),
    (
        "one label",
        run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "labels": ["A"]}, dpo={}),
        "spec.rlaif.labels: ",
    ),
    (
        "threshold below one half",
        run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "confidenceThreshold": 0.4}, dpo={}),
        "spec.rlaif.confidenceThreshold: ",
    ),
    (
        "one response per prompt",
        run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "responsesPerPrompt": 1}, dpo={}),
        "spec.rlaif.responsesPerPrompt: ",
    ),
    (
        "falling thresholds",
        run_doc(["sft", "reward", "rest"], rest={**REST, "threshold": {"values": [80, 50]}}),
        "spec.rest.threshold: values must not decrease",
    ),
    (
        "percentile of 100",
        run_doc(["sft", "reward", "rest"], rest={**REST, "threshold": {"values": [50, 100]}}),
        "spec.rest.threshold: percentile values must be at least 0 and below 100",
    ),
    (
        "too many improve steps",
        run_doc(["sft", "reward", "rest"], rest={**REST, "threshold": {"values": [1.0] * 9}}),
        "spec.rest.threshold.values: ",
    ),
]


@pytest.mark.parametrize("document", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_allowed(document: dict[str, Any]) -> None:
    parse_run(document)


@pytest.mark.parametrize(("document", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_errors_name_the_field(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(RunInvalid) as caught:
        parse_run(document)
    assert any(line.startswith(expected) for line in caught.value.errors), caught.value.errors


def _cel_failures(schema: dict[str, Any], value: Any, path: str = "spec") -> list[str]:
    """Every x-kubernetes-validations rule in the schema, evaluated where the document has a value
    (what the API server does), except the transition rules on oldSelf."""
    failures = [
        f"{path}: {rule['message']}"
        for rule in schema.get("x-kubernetes-validations", [])
        if "oldSelf" not in rule["rule"] and cel.evaluate(rule["rule"], {"self": value}) is not True
    ]
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                failures += _cel_failures(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            failures += _cel_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def _spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


# Rules pydantic checks on types and bounds (minItems, minimum) the API server checks by schema, not CEL.
SCHEMA_ONLY = {"one label", "threshold below one half", "one response per prompt", "too many improve steps"}


@pytest.mark.parametrize(
    ("name", "document"), [(c[0], c[1]) for c in VALID + [(c[0], c[1]) for c in INVALID]], ids=lambda x: x
)
def test_cel_agrees_with_pydantic(name: str, document: dict[str, Any]) -> None:
    """The API server's CEL verdict, on every rule in the tree, is the same as `rlhf validate`'s."""
    if name in SCHEMA_ONLY:
        pytest.skip("a schema bound, not a CEL rule")
    cel_ok = not _cel_failures(_spec_schema(), document["spec"])
    try:
        parse_run(document)
        model_ok = True
    except RunInvalid:
        model_ok = False
    assert cel_ok == model_ok, _cel_failures(_spec_schema(), document["spec"])


def _configs(document: dict[str, Any]) -> dict[str, TrainerJobConfig]:
    return {p.name: p.config for p in plan(parse_run(document), "/ws") if p.config is not None}


def test_rest_starts_from_sft_scored_by_the_reward_stage() -> None:
    configs = _configs(run_doc(["sft", "reward", "rest"], rest=REST))
    rest = configs["rest"]
    assert rest.model.name == "/ws/demo/sft/merged"
    assert rest.reward_model is not None and rest.reward_model.name == "/ws/demo/reward/merged"
    assert rest.rest is not None and [s.type for s in rest.rest.rewards] == ["rewardModel"]


def test_rest_without_reward_stage_gets_no_reward_model() -> None:
    rest = {**REST, "rewards": [{"type": "builtin", "builtin": "arithmetic"}]}
    config = _configs(run_doc(["sft", "rest"], rest=rest))["rest"]
    assert config.reward_model is None and config.model.name == "/ws/demo/sft/merged"


@pytest.mark.parametrize("dpo", [{}, {"dataset": {"source": "rlaif", "evalFraction": 0.2, "maxSamples": 50}}])
def test_rlaif_pairs_are_the_next_stage_data(dpo: dict[str, Any]) -> None:
    document = run_doc(["sft", "rlaif", "dpo"], rlaif={**RLAIF, "judge": {"name": "./judges/big"}}, dpo=dpo)
    plans = {p.name: p for p in plan(parse_run(document), "/ws")}
    rlaif, dpo_plan = plans["rlaif"], plans["dpo"]
    assert rlaif.merged_path is None  # data, not a model
    assert rlaif.config is not None and rlaif.config.rlaif is not None
    assert rlaif.config.model.name == "/ws/demo/sft/merged"
    assert rlaif.config.rlaif.judge.name == "/ws/judges/big"  # relative: on the volume
    assert dpo_plan.config is not None and dpo_plan.config.dpo is not None
    dataset = dpo_plan.config.dpo.dataset
    assert (dataset.source, dataset.format) == ("/ws/demo/rlaif/preferences.jsonl", "preference")
    assert dataset.eval_fraction == dpo.get("dataset", {}).get("evalFraction", 0.05)
    assert dataset.max_samples == dpo.get("dataset", {}).get("maxSamples")
    assert dpo_plan.config.model.name == "/ws/demo/sft/merged"
    # task_accuracy of the dpo stage is measured on the prompts' task, which has ground truth
    assert dpo_plan.config.eval_task is not None and dpo_plan.config.eval_task.source == "builtin:arithmetic"
    assert [(i.stage, i.role) for i in dpo_plan.config.inputs] == [("sft", "model"), ("rlaif", "dataset")]
    assert TrainerJobConfig.model_validate(dpo_plan.config_file()) == dpo_plan.config


def test_rlaif_then_reward_then_ppo() -> None:
    configs = _configs(run_doc(["sft", "rlaif", "reward", "ppo"], rlaif=RLAIF, reward={}))
    assert configs["reward"].reward is not None
    assert configs["reward"].reward.dataset.source == "/ws/demo/rlaif/preferences.jsonl"
    assert configs["reward"].model.name == "/ws/demo/sft/merged"
    assert configs["ppo"].ppo is not None and configs["ppo"].ppo.dataset.source == "builtin:arithmetic"
    assert configs["ppo"].reward_model is not None and configs["ppo"].reward_model.name == "/ws/demo/reward/merged"
    assert configs["ppo"].eval_task is None


def test_threshold_rules_in_the_crd() -> None:
    rest = _spec_schema()["properties"]["rest"]
    rules = rest["properties"]["threshold"]["x-kubernetes-validations"]
    ok = {"mode": "percentile", "values": [10.0, 10.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.5]}
    assert all(cel.evaluate(r["rule"], {"self": ok}) for r in rules)
    falling_late = {"mode": "absolute", "values": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.5]}
    assert not all(cel.evaluate(r["rule"], {"self": falling_late}) for r in rules)
    assert all(cel.evaluate(r["rule"], {"self": {"mode": "absolute", "values": [-3.0, 250.0]}}) for r in rules)


def test_memory_estimate_covers_rest_and_says_why_not_rlaif() -> None:
    from rlhf_operator.estimate.catalog import lookup
    from rlhf_operator.estimate.memory import estimate_run

    gpu = {"gpusPerWorker": 1, "nodePool": {"accelerator": "nvidia-a100-80gb"}}
    llama = {"name": "meta-llama/Llama-2-7b-hf"}
    rest = run_doc(["sft", "reward", "rest"], rest=REST, model=llama, placement=gpu)
    estimates = {e.stage: e for e in estimate_run(parse_run(rest), lookup)}
    assert estimates["rest"].estimated and estimates["rest"].total > 0
    rlaif = run_doc(["sft", "rlaif", "dpo"], rlaif=RLAIF, dpo={}, model=llama, placement=gpu)
    estimates = {e.stage: e for e in estimate_run(parse_run(rlaif), lookup)}
    assert estimates["rlaif"].note.startswith("no estimate: rlaif trains nothing")
    assert estimates["dpo"].estimated
