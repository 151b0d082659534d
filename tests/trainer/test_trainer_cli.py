"""`rlhf-train`: bad input exits non-zero with one line naming the field, and result.json says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rlhf_api.result import read_result
from rlhf_trainer.__main__ import main

from .stage_helpers import run_stage_cli, write_config

pytestmark = pytest.mark.timeout(300)


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhf-train:")]


def test_missing_dataset_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"a": "x", "b": "y"}) + "\n")
    config = write_config(
        tmp_path / "c.yaml",
        "sft",
        str(tmp_path),
        tmp_path / "out",
        dataset={"source": str(data), "fields": {"question": "q", "answer": "b"}},
    )
    code, result = run_stage_cli("sft", config)
    message = "dataset.fields.question: column 'q' not in dataset (columns: a, b)"
    assert code == 1
    assert error_lines(capsys) == [f"rlhf-train: error: {message}"]
    assert result is not None and result.status == "failed" and result.message == message


def test_absent_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", "dpo", str(tmp_path), tmp_path / "out", model="/no/such/model")
    code, result = run_stage_cli("dpo", config)
    assert code == 1
    assert error_lines(capsys) == ["rlhf-train: error: model.name: model path '/no/such/model' does not exist"]
    assert result is not None and result.status == "failed" and result.message.startswith("model.name:")


def test_unsupported_quantization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on hardware bitsandbytes cannot use
    config = write_config(tmp_path / "c.yaml", "reward", str(tmp_path), tmp_path / "out", quantization={"mode": "8bit"})
    code, result = run_stage_cli("reward", config)
    assert code != 0
    (line,) = error_lines(capsys)
    assert line.startswith("rlhf-train: error: quantization.mode: '8bit' needs bitsandbytes")
    assert result is not None and result.status == "failed"


def test_invalid_config_value_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.json", "sft", str(tmp_path), tmp_path / "out", lora={"r": 0})
    assert main(["sft", "--config", str(config)]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("rlhf-train: error: sft.lora.r: ")
    result = read_result(str(tmp_path / "out" / "result.json"))
    assert result is not None and result.status == "failed" and result.message.startswith("sft.lora.r")


def test_invalid_compare_config_leaves_the_finished_stage_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    finished = {"stage": "sft", "status": "succeeded", "outputPath": str(out)}
    (out / "result.json").write_text(json.dumps(finished))
    config = write_config(tmp_path / "c.json", "sft", str(tmp_path), out, lora={"r": 0})
    assert main(["compare", "--config", str(config)]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("rlhf-train: error: sft.lora.r: ")
    result = read_result(str(out / "result.json"))
    assert result is not None and result.status == "succeeded"


def test_stage_argument_must_match_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", "sft", str(tmp_path), tmp_path / "out")
    assert main(["dpo", "--config", str(config)]) == 2
    assert error_lines(capsys) == ["rlhf-train: error: stage: the config is for stage 'sft', not 'dpo'"]


def test_unreadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sft", "--config", str(tmp_path / "missing.yaml")]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("rlhf-train: error: --config: cannot read")


def test_console_entry_point_exit_code_and_termination_log(tmp_path: Path) -> None:
    """The real process: `python -m rlhf_trainer`, its exit code, stderr, termination message."""
    config = write_config(tmp_path / "c.yaml", "sft", str(tmp_path), tmp_path / "out", model="./absent-model")
    log = tmp_path / "termination-log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RLHF_TERMINATION_LOG": str(log)}
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_trainer", "sft", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rlhf-train:")]
    assert lines == ["rlhf-train: error: model.name: model path './absent-model' does not exist"]
    summary = json.loads(log.read_text())
    assert summary["status"] == "failed" and summary["stage"] == "sft"
    assert summary["message"].startswith("model.name:")
