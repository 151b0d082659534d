"""The `rlhf` command line: validate, crd, run's clear failures and its resume/report logic."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.result import StageResult, write_result
from rlhf_api.validation import parse_run
from rlhf_operator import cli, local
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


def _fake_trainer(tmp_path: Path, fail_stage: str | None) -> Path:
    """A stand-in for `python -m rlhf_trainer` that writes result.json like the real one.

    The executor's own logic (ordering, skipping finished stages, reporting failures) is what is
    tested here; the real trainer runs in tests/trainer and the end-to-end quickstart test.
    """
    script = tmp_path / "fake_trainer.py"
    script.write_text(
        f"""
import sys, yaml
from rlhf_api.stage_config import TrainerJobConfig
from rlhf_api.progress import emit
from rlhf_api.result import StageResult, write_result
stage, config = sys.argv[-3], sys.argv[-1]
cfg = TrainerJobConfig.model_validate(yaml.safe_load(open(config)))
emit(stage, step=1, max_steps=1, loss=0.5)
with open("{tmp_path}/calls.txt", "a") as f:
    f.write(stage + "\\n")
if stage == {fail_stage!r}:
    print("boom: dataset.source: no such file", file=sys.stderr)
    write_result(StageResult(stage=stage, status="failed", output_path=cfg.output_dir,
                             message="dataset.source: no such file"), cfg.output_dir + "/result.json")
    sys.exit(1)
write_result(StageResult(stage=stage, status="succeeded", output_path=cfg.output_dir,
                         merged_path=cfg.output_dir + "/merged", metrics={{"task_accuracy": 0.5}}),
             cfg.output_dir + "/result.json")
"""
    )
    return script


def _patch_command(monkeypatch: pytest.MonkeyPatch, script: Path) -> None:
    def command(stage: Any, config_path: str, nproc: int) -> list[str]:
        return [sys.executable, str(script), stage.name, "--config", config_path]

    monkeypatch.setattr(local, "stage_command", command)


def test_local_run_failure_keeps_finished_stages_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = parse_run(MINIMAL)
    _patch_command(monkeypatch, _fake_trainer(tmp_path, fail_stage="reward"))
    status = local.LocalRun(run, tmp_path / "runs").execute()
    report = json.loads((tmp_path / "runs/demo/report.json").read_text())
    assert status.phase == "Failed" and report["phase"] == "Failed"
    assert [s["phase"] for s in report["stages"]] == ["Succeeded", "Failed", "Pending"]
    assert "stage reward failed: dataset.source: no such file" in report["message"]
    assert {c["type"]: c["status"] for c in report["conditions"]} == {
        "Ready": "False",
        "Reconciling": "False",
        "Stalled": "True",
    }
    out = capsys.readouterr().out
    assert "[sft] step 1/1 loss=0.5" in out and "[reward] FAILED" in out

    # rerun: sft is complete and not run again; reward and ppo run
    _patch_command(monkeypatch, _fake_trainer(tmp_path, fail_stage=None))
    status = local.LocalRun(run, tmp_path / "runs").execute()
    assert status.phase == "Succeeded"
    assert (tmp_path / "calls.txt").read_text().split() == ["sft", "reward", "reward", "ppo"]
    report = json.loads((tmp_path / "runs/demo/report.json").read_text())
    assert report["stages"][0]["metrics"] == {"task_accuracy": 0.5}
    assert report["conditions"][0] == {**report["conditions"][0], "type": "Ready", "status": "True"}


def test_local_run_reports_a_trainer_that_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "dies.py"
    script.write_text("import sys\nprint('Killed')\nsys.exit(137)\n")
    _patch_command(monkeypatch, script)
    status = local.LocalRun(parse_run(MINIMAL), tmp_path / "runs").execute()
    assert status.phase == "Failed"
    assert status.stages[0].message == "exit code 137: Killed"


def test_stage_command_uses_torchrun_for_several_processes() -> None:
    plan = local.plan(parse_run(MINIMAL), "/tmp/x")[0]
    assert local.stage_command(plan, "c.yaml", 1)[1:] == ["-m", "rlhf_trainer", "sft", "--config", "c.yaml"]
    multi = local.stage_command(plan, "c.yaml", 2)
    assert multi[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc-per-node=2" in multi


def test_skipped_stage_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = {**MINIMAL, "spec": {**MINIMAL["spec"], "sft": {"existingOutput": "/models/sft"}}}
    _patch_command(monkeypatch, _fake_trainer(tmp_path, fail_stage=None))
    status = local.LocalRun(parse_run(document), tmp_path / "runs").execute()
    assert [s.phase for s in status.stages] == ["Skipped", "Succeeded", "Succeeded"]
    assert (tmp_path / "calls.txt").read_text().split() == ["reward", "ppo"]


def test_result_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_TERMINATION_LOG", str(tmp_path / "term"))
    result = StageResult(stage="sft", status="succeeded", output_path="/o", metrics={"loss": 1.0})
    write_result(result, str(tmp_path / "result.json"))
    assert StageResult.model_validate_json((tmp_path / "term").read_text()) == result
