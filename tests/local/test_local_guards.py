"""`rlhf run` applies a stage's guards and hang deadline through the same state machine as the
operator: the local backend hands the progress lines of its processes to `reconcile`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rlhf_cli.local import runner

from .test_local_run import calls, document, events, fake_trainer, report, run_local, stage

__all__ = ["fake_trainer"]  # the autouse fixture: the stage programs are the fake


@pytest.fixture(autouse=True)
def _frequent_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_IDLE_PASS_SECONDS", 0.2)  # a pass (and a progress reading) every 0.2 s


def test_a_stop_guard_ends_the_stage_without_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_STEPS", "200")
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    monkeypatch.setenv("FAKE_NUMBERS", json.dumps({"sft": {"kl": 0.9}}))
    doc = document()
    doc["spec"]["sft"]["guards"] = {"maxKL": 0.5, "action": "stop"}
    status = run_local(tmp_path, doc)
    assert status.phase == "Failed" and calls(tmp_path) == ["sft"]  # not retried
    sft = stage(tmp_path, "sft")
    assert sft["phase"] == "Failed" and sft["attempts"] == 1 and "kl=0.9 (> maxKL 0.5)" in sft["message"]
    assert 0 < sft["progress"]["step"] < 200  # stopped long before the end
    assert ("Warning", "GuardTripped") in events(tmp_path)
    healthy = next(c for c in report(tmp_path)["conditions"] if c["type"] == "Healthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "GuardTripped")
    assert list((tmp_path / "demo" / "sft" / "checkpoints").iterdir())  # its checkpoints are kept


def test_a_hung_stage_is_retried_after_its_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_HANG", json.dumps({"sft": 2}))
    doc = document()
    doc["spec"]["sft"].update(progressDeadlineSeconds=1, startupProgressDeadlineSeconds=20)
    status = run_local(tmp_path, doc)
    assert status.phase == "Succeeded"
    assert calls(tmp_path) == ["sft", "sft", "reward", "ppo"]
    sft = stage(tmp_path, "sft")
    assert sft["attempts"] == 2 and sft["resumedFromStep"] == 2  # from the hung attempt's checkpoint
    assert ("Warning", "StageStalled") in events(tmp_path)
    assert sft["progress"]["step"] == 3 and sft["progress"]["percent"] == 100.0
