"""Served models in the contract and the operator: remote sources and endpoint judges validate
(pydantic and the CRD's CEL twins agree), credentials reach pods only as secretKeyRef env, and
the examples render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError
from rlhf_api.reward_sources import RewardSource
from rlhf_api.served import JUDGE_API_KEY_ENV, JudgeModel, header_env, served_urls, url_label
from rlhf_api.spec import RLHFRun
from rlhf_api.stages.rlaif import RlaifStageConfig
from rlhf_operator.crd import crd
from rlhf_operator.render import render
from rlhf_operator.settings import OperatorSettings

from tests.operator.test_manifests import K8S_VERSION

REPO = Path(__file__).resolve().parents[2]
URL = "http://reward-server.ml.svc:8000/score"
REMOTE = {"type": "remote", "remote": {"url": URL}}
SECRET_HEADER = {"name": "Authorization", "secretKeyRef": {"name": "auth", "key": "bearer"}}
ENDPOINT = {"url": "http://judge.ml.svc:8000/v1", "model": "llama-70b", "apiKey": {"name": "judge", "key": "k"}}

SOURCES: list[tuple[str, dict[str, Any], bool]] = [
    ("remote", REMOTE, True),
    ("remote with options", {"type": "remote", "remote": {"url": URL, "batchSize": 8, "retries": 0}}, True),
    ("remote header", {"type": "remote", "remote": {"url": URL, "headers": [SECRET_HEADER]}}, True),
    ("remote missing", {"type": "remote"}, False),
    ("remote on a builtin", {"type": "builtin", "builtin": "arithmetic", "remote": {"url": URL}}, False),
]

JUDGES: list[tuple[str, dict[str, Any], bool]] = [
    ("model", {"name": "org/judge"}, True),
    ("endpoint", {"endpoint": ENDPOINT}, True),
    ("both", {"name": "org/judge", "endpoint": ENDPOINT}, False),
    ("neither", {"dtype": "float32"}, False),
]


def _spec_props() -> dict[str, Any]:
    props: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    return props


def _cel_ok(schema: dict[str, Any], value: dict[str, Any]) -> bool:
    return all(cel.evaluate(r["rule"], {"self": value}) for r in schema.get("x-kubernetes-validations", []))


@pytest.mark.parametrize(("source", "valid"), [c[1:] for c in SOURCES], ids=[c[0] for c in SOURCES])
def test_remote_source_rules_agree_with_the_crd(source: dict[str, Any], valid: bool) -> None:
    schema = _spec_props()["grpo"]["properties"]["rewards"]["items"]
    jsonschema.Draft4Validator(schema).validate(source)
    assert _cel_ok(schema, source) == valid
    try:
        RewardSource.model_validate(source)
        assert valid
    except ValidationError:
        assert not valid


@pytest.mark.parametrize(("judge", "valid"), [c[1:] for c in JUDGES], ids=[c[0] for c in JUDGES])
def test_judge_is_a_model_or_an_endpoint(judge: dict[str, Any], valid: bool) -> None:
    schema = _spec_props()["rlaif"]["properties"]["judge"]
    jsonschema.Draft4Validator(schema).validate(judge)
    assert _cel_ok(schema, judge) == valid
    try:
        JudgeModel.model_validate(judge)
        assert valid
    except ValidationError:
        assert not valid


def test_no_literal_secrets_and_bad_values() -> None:
    for bad in (
        {"type": "remote", "remote": {"url": URL, "headers": [{"name": "Authorization", "secretKeyRef": "Bearer x"}]}},
        {"type": "remote", "remote": {"url": URL, "headers": [{"name": "Authorization", "value": "Bearer x"}]}},
        {"type": "remote", "remote": {"url": "reward-server:8000"}},
        {"type": "remote", "remote": {"url": URL, "timeoutSeconds": 0}},
        {"type": "remote", "remote": {"url": URL, "headers": [SECRET_HEADER, SECRET_HEADER]}},
    ):
        with pytest.raises(ValidationError):
            RewardSource.model_validate(bad)
    with pytest.raises(ValidationError, match="never a literal value"):
        JudgeModel.model_validate({"endpoint": {**ENDPOINT, "apiKey": "sk-abc"}})


def test_endpoint_judge_reads_labels() -> None:
    section = {"judge": {"endpoint": ENDPOINT}, "dataset": {"source": "builtin:arithmetic"}}
    RlaifStageConfig.model_validate(section)
    with pytest.raises(ValidationError, match="choices must be labels"):
        RlaifStageConfig.model_validate({**section, "choices": "responses"})
    schema = _spec_props()["rlaif"]
    assert not _cel_ok(schema, {**section, "choices": "responses"}) and _cel_ok(schema, section)
    assert _cel_ok(schema, {"judge": {"name": "builtin:arithmetic-judge"}, "choices": "responses"})


def test_labels_and_urls() -> None:
    assert url_label(URL) == "reward-server" and url_label("http://127.0.0.1:8000/score") == "127.0.0.1"
    assert url_label("https://user@scores.example.com/v1/score") == "scores"
    section = RlaifStageConfig.model_validate({"judge": {"endpoint": ENDPOINT}, "dataset": {"source": "x.jsonl"}})
    assert served_urls(section) == [ENDPOINT["url"]]


def _run(**spec: Any) -> RLHFRun:
    base = {
        "model": {"name": "builtin:tiny-llama"},
        "placement": {"gpusPerWorker": 0},
        "sft": {"dataset": {"source": "builtin:arithmetic"}},
    }
    return RLHFRun.model_validate(
        {"apiVersion": "rlhf.dev/v1alpha1", "kind": "RLHFRun", "metadata": {"name": "r"}, "spec": {**base, **spec}}
    )


def _env_by_stage(run: RLHFRun) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for obj in render(run, OperatorSettings(), namespace="default"):
        if obj["kind"] == "PyTorchJob":
            container = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
            out[obj["metadata"]["name"]] = container["env"]
    return out


def test_pods_get_credentials_only_as_secret_key_refs() -> None:
    remote = {"type": "remote", "remote": {"url": URL, "headers": [SECRET_HEADER, {**SECRET_HEADER, "name": "X-Org"}]}}
    run = _run(
        pipeline=["sft", "grpo"],
        grpo={
            "dataset": {"source": "builtin:arithmetic"},
            "rewards": [{"type": "builtin", "builtin": "arithmetic"}, remote],
        },
    )
    env = _env_by_stage(run)
    assert not any(e["name"].startswith("RLHF_REWARD") for e in env["r-sft-1"])
    served = [e for e in env["r-grpo-1"] if e["name"].startswith("RLHF_")]
    assert served == [
        {"name": header_env(1, 0), "valueFrom": {"secretKeyRef": {"name": "auth", "key": "bearer"}}},
        {"name": header_env(1, 1), "valueFrom": {"secretKeyRef": {"name": "auth", "key": "bearer"}}},
    ]
    assert header_env(1, 0) == "RLHF_REWARD_1_HEADER_0"

    run = _run(
        pipeline=["sft", "rlaif", "dpo"],
        rlaif={"dataset": {"source": "builtin:arithmetic"}, "judge": {"endpoint": ENDPOINT}},
        dpo={},
    )
    env = _env_by_stage(run)
    assert {"name": JUDGE_API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": "judge", "key": "k"}}} in env["r-rlaif-1"]
    assert not any(e["name"] == JUDGE_API_KEY_ENV for e in env["r-dpo-1"])


def test_examples_validate() -> None:
    for name in ("quickstart-remote-reward.yaml", "grpo-remote-reward.yaml"):
        runs = [d for d in yaml.safe_load_all((REPO / "examples" / name).read_text()) if d["kind"] == "RLHFRun"]
        assert len(runs) == 1
        run = RLHFRun.model_validate(runs[0])
        assert run.spec.grpo is not None and run.spec.grpo.rewards[0].type == "remote"
    server = list(yaml.safe_load_all((REPO / "examples" / "reward-server" / "reward-server.yaml").read_text()))
    assert [d["kind"] for d in server] == ["Deployment", "Service"]
    container = server[0]["spec"]["template"]["spec"]["containers"][0]
    assert (
        container["command"] == ["rlhf-train", "serve-reward"]
        and container["readinessProbe"]["httpGet"]["path"] == "/health"
    )
    assert server[1]["spec"]["ports"][0]["port"] == 8000
    for document in server:  # strict core schemas: no misspelt field
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


PPO_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("default source needs the reward stage", {}, False),
    ("a remote source alone", {"rewards": [REMOTE]}, True),
    ("rewardModel among the sources", {"rewards": [REMOTE, {"type": "rewardModel"}]}, False),
]


@pytest.mark.parametrize(("ppo", "valid"), [c[1:] for c in PPO_CASES], ids=[c[0] for c in PPO_CASES])
def test_ppo_without_a_reward_stage_needs_sources_without_the_reward_model(ppo: dict[str, Any], valid: bool) -> None:
    spec = {
        "model": {"name": "builtin:tiny-llama"},
        "pipeline": ["sft", "ppo"],
        "sft": {"dataset": {"source": "builtin:arithmetic"}},
        "ppo": {"dataset": {"source": "builtin:arithmetic"}, **ppo},
    }
    document = {"apiVersion": "rlhf.dev/v1alpha1", "kind": "RLHFRun", "metadata": {"name": "r"}, "spec": spec}
    rules = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert all(cel.evaluate(r["rule"], {"self": spec}) for r in rules) == valid
    try:
        run = RLHFRun.model_validate(document)
    except ValidationError as error:
        assert not valid and "ppo needs a reward model" in str(error)
        return
    assert valid
    env = _env_by_stage(run)
    assert set(env) == {"r-sft-1", "r-ppo-1"}
    configs = [o for o in render(run, OperatorSettings(), namespace="default") if o["kind"] == "ConfigMap"]
    ppo_config = yaml.safe_load(
        next(c for c in configs if c["metadata"]["name"].endswith("ppo-config"))["data"]["config.yaml"]
    )
    assert "rewardModel" not in ppo_config and ppo_config["ppo"]["rewards"][0]["type"] == "remote"
