"""The `rlhf` command line: validate, crd, run's clear failures and its resume/report logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.result import StageResult, write_result
from rlhf_cli import main as cli
from rlhf_operator.crd import crd_yaml

from .conftest import EXAMPLES, MINIMAL, REPO


def _write(tmp_path: Path, document: dict[str, Any], name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", *map(str, EXAMPLES)]) == 0
    assert capsys.readouterr().out.count("valid RLHFRun") == len(EXAMPLES)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"launcher": "job"}, "spec.launcher"),
        ({"pipeline": ["ppo"]}, "spec.pipeline"),
        ({"sft": {"dataset": {"source": "d"}, "lora": {"r": -1}}}, "spec.sft.lora.r"),
        ({"secrets": {"wandbApiKey": "abc123"}}, "spec.secrets.wandbApiKey"),
        (
            {
                "pipeline": ["sft", "reward", "grpo"],
                "grpo": {"dataset": {"source": "d"}, "rewards": [{"type": "model"}]},
            },
            "spec.grpo.rewards[0].model",
        ),
    ],
)
def test_validate_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], field: str
) -> None:
    path = _write(tmp_path, {**MINIMAL, "spec": {**MINIMAL["spec"], **change}})
    assert cli.main(["validate", path]) == 1
    assert f"  {field}" in capsys.readouterr().err


def test_validate_missing_model_and_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = dict(MINIMAL["spec"])
    spec.pop("model")
    assert cli.main(["validate", _write(tmp_path, {**MINIMAL, "spec": spec})]) == 1
    assert "spec.model: Field required" in capsys.readouterr().err
    assert cli.main(["validate", str(tmp_path / "absent.yaml")]) == 1
    (tmp_path / "broken.yaml").write_text("spec: [unclosed")
    assert cli.main(["validate", str(tmp_path / "broken.yaml")]) == 1
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("example", "stages"),
    [("quickstart-grpo.yaml", ["sft", "reward", "grpo"]), ("quickstart-rloo.yaml", ["sft", "rloo"])],
)
def test_render_makes_one_job_per_stage(capsys: pytest.CaptureFixture[str], example: str, stages: list[str]) -> None:
    """Stage jobs are stage-agnostic: each runs `rlhf-train <stage>` on its ConfigMap's config."""
    assert cli.main(["render", str(REPO / "examples" / example)]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    jobs = [o for o in objects if o["kind"] == "PyTorchJob"]
    commands = [
        j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"] for j in jobs
    ]
    assert [c[:2] for c in commands] == [["rlhf-train", stage] for stage in stages]
    configs = {
        o["metadata"]["name"]: yaml.safe_load(o["data"]["config.yaml"]) for o in objects if o["kind"] == "ConfigMap"
    }
    last = configs[f"{objects[0]['metadata']['name'].removesuffix('-data')}-{stages[-1]}-config"]
    assert last["stage"] == stages[-1] and last["model"]["name"].endswith("/sft/merged")
    assert ("rewardModel" in last) == ("reward" in stages)


def test_crd_command_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_result_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_TERMINATION_LOG", str(tmp_path / "term"))
    result = StageResult(stage="sft", status="succeeded", output_path="/o", metrics={"loss": 1.0})
    write_result(result, str(tmp_path / "result.json"))
    assert StageResult.model_validate_json((tmp_path / "term").read_text()) == result
