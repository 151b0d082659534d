"""`rlhf run` drives the operator's state machine: retries with backoff, killed processes,
Ctrl-C suspend and resume, and a report.json with the cluster's status shape.

The stage programs are stood in for by fake_trainer.py (fast, same contract: progress lines,
result.json, checkpoints, SIGTERM); the real trainer runs in tests/trainer and tests/e2e.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_api.status import RLHFRunStatus
from rlhf_api.validation import parse_run
from rlhf_cli.local import launcher as local_launcher
from rlhf_cli.local.launcher import stage_command
from rlhf_cli.local.runner import LocalRun, retry_failed

FAKE = Path(__file__).with_name("fake_trainer.py")


def document(retries: int = 2, backoff: int = 0, **spec: Any) -> dict[str, Any]:
    control = {"retries": retries, "retryBackoffSeconds": backoff}
    return {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "RLHFRun",
        "metadata": {"name": "demo"},
        "spec": {
            "model": {"name": "builtin:tiny-llama"},
            "placement": {"gpusPerWorker": 0},
            "sft": {"dataset": {"source": "builtin:arithmetic"}, **control},
            "reward": {"dataset": {"source": "builtin:arithmetic", "format": "preference"}, **control},
            "ppo": {"dataset": {"source": "builtin:arithmetic"}, **control},
            **spec,
        },
    }


def fake_command(stage: str, config_path: str, nproc: int) -> list[str]:
    return [sys.executable, str(FAKE), stage, "--config", config_path]


def fake_rlhf_run(doc: dict[str, Any], workdir: Path) -> list[str]:
    """`rlhf run` in a fresh interpreter (signals, a terminal), stage programs replaced by the fake."""
    path = workdir / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    program = (
        "import sys\n"
        "from rlhf_cli.local import launcher\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_local_run import fake_command\n"
        "launcher.stage_command = fake_command\n"
        "from rlhf_cli import main as cli\n"
        f"sys.exit(cli.main(['run', {str(path)!r}, '--workdir', {str(workdir)!r}]))\n"
    )
    return [sys.executable, "-c", program]


@pytest.fixture(autouse=True)
def fake_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_launcher, "stage_command", fake_command)
    for name in ("FAKE_FAIL", "FAKE_STEPS", "FAKE_STEP_SECONDS", "FAKE_NUMBERS", "FAKE_HANG"):
        monkeypatch.delenv(name, raising=False)


def run_local(workdir: Path, doc: dict[str, Any]) -> RLHFRunStatus:
    return LocalRun(parse_run(doc), workdir).execute()


def report(workdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((workdir / "demo" / "report.json").read_text())
    return data


def stage(workdir: Path, name: str) -> dict[str, Any]:
    return next(s for s in report(workdir)["stages"] if s["name"] == name)


def events(workdir: Path) -> list[tuple[str, str]]:
    lines = (workdir / "demo" / "events.jsonl").read_text().splitlines()
    return [(e["type"], e["reason"]) for e in map(json.loads, lines)]


def calls(workdir: Path) -> list[str]:
    return (workdir / "calls.txt").read_text().split()


def test_failed_attempt_is_retried_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", json.dumps({"reward": 1}))
    status = run_local(tmp_path, document())
    assert status.phase == "Succeeded"
    assert calls(tmp_path) == ["sft", "reward", "reward", "ppo"]
    reward = stage(tmp_path, "reward")
    assert reward["attempts"] == 2 and reward["jobName"] == "demo-reward-2" and reward["resumedFromStep"] == 3
    assert ("Warning", "StageRetrying") in events(tmp_path)  # one event per pass: the retry's start is in it
    # report.json is the RLHFRun status, kstatus conditions included.
    parsed = RLHFRunStatus.model_validate(report(tmp_path))
    assert {c.type: c.status for c in parsed.conditions} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }


def test_retries_exhausted_fail_and_a_rerun_gives_one_more_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_FAIL", json.dumps({"reward": 9}))
    status = run_local(tmp_path, document(retries=1))
    assert status.phase == "Failed"
    assert [s["phase"] for s in report(tmp_path)["stages"]] == ["Succeeded", "Failed", "Pending"]
    assert "dataset.source: no such file" in report(tmp_path)["message"]
    assert {c["type"]: c["status"] for c in report(tmp_path)["conditions"]}["Stalled"] == "True"
    out = capsys.readouterr().out
    assert "[sft] step 3/3 loss=0.3333" in out and "boom in reward attempt 2" in out

    monkeypatch.setenv("FAKE_FAIL", "{}")
    assert run_local(tmp_path, document(retries=1)).phase == "Succeeded"
    assert calls(tmp_path) == ["sft", "reward", "reward", "reward", "ppo"]  # sft never runs again
    assert stage(tmp_path, "reward")["attempts"] == 3


def test_retry_waits_for_the_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", json.dumps({"sft": 1}))
    doc = document(backoff=1, pipeline=["sft"])
    for other in ("reward", "ppo"):
        doc["spec"].pop(other)
    started = time.monotonic()
    assert run_local(tmp_path, doc).phase == "Succeeded"
    assert time.monotonic() - started >= 1.0
    assert stage(tmp_path, "sft")["attempts"] == 2


def test_killed_stage_process_is_a_failed_attempt_that_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_STEPS", "40")
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    doc = document(pipeline=["sft"])
    for other in ("reward", "ppo"):
        doc["spec"].pop(other)
    outcome: dict[str, RLHFRunStatus] = {}
    worker = threading.Thread(target=lambda: outcome.update(status=run_local(tmp_path, doc)))
    worker.start()
    checkpoint = tmp_path / "demo" / "sft" / "checkpoints" / "checkpoint-3"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = json.loads((tmp_path / "demo" / "jobs.json").read_text())["demo-sft-1"]["status"]["pid"]
    os.kill(pid, signal.SIGKILL)
    worker.join(60)
    assert outcome["status"].phase == "Succeeded"
    sft = stage(tmp_path, "sft")
    assert sft["attempts"] == 2 and sft["resumedFromStep"] >= 3
    assert "attempt 1 failed (killed by signal 9)" in next(
        json.loads(line)["message"]
        for line in (tmp_path / "demo" / "events.jsonl").read_text().splitlines()
        if "StageRetrying" in line
    )


def test_ctrl_c_suspends_and_the_same_command_resumes(tmp_path: Path) -> None:
    doc = document(pipeline=["sft"])
    for other in ("reward", "ppo"):
        doc["spec"].pop(other)
    env = dict(os.environ, FAKE_STEPS="40", FAKE_STEP_SECONDS="0.05")
    proc = subprocess.Popen(fake_rlhf_run(doc, tmp_path), env=env, stdout=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "demo" / "sft" / "checkpoints" / "checkpoint-3"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert report(tmp_path)["phase"] == "Suspended" and stage(tmp_path, "sft")["phase"] == "Suspended"
    assert "Run the same command again to resume" in out
    preempted = json.loads((tmp_path / "demo" / "sft" / "result.json").read_text())
    assert preempted["preempted"] is True

    status = run_local(tmp_path, doc)
    assert status.phase == "Succeeded"
    sft = stage(tmp_path, "sft")
    assert sft["attempts"] == 1  # suspended and resumed, not failed
    assert sft["resumedFromStep"] == preempted["steps"]
    assert ("Normal", "Suspended") in events(tmp_path) and ("Normal", "Resumed") in events(tmp_path)


def test_a_stage_process_left_running_by_a_killed_rlhf_run_counts_as_failed(tmp_path: Path) -> None:
    doc = document(pipeline=["sft"])
    for other in ("reward", "ppo"):
        doc["spec"].pop(other)
    assert run_local(tmp_path, doc).phase == "Succeeded"
    # Pretend the previous `rlhf run` died mid-stage: its record says Running.
    jobs_file = tmp_path / "demo" / "jobs.json"
    jobs = json.loads(jobs_file.read_text())
    jobs["demo-sft-1"]["status"] = {"state": "Running", "pid": 2**22 + 12345}
    jobs_file.write_text(json.dumps(jobs))
    raw = report(tmp_path)
    raw["phase"], raw["stages"][0]["phase"] = "Running", "Running"
    (tmp_path / "demo" / "report.json").write_text(json.dumps(raw))
    assert run_local(tmp_path, doc).phase == "Succeeded"
    assert stage(tmp_path, "sft")["attempts"] == 2


def test_skipped_stage_is_reported(tmp_path: Path) -> None:
    doc = document()
    doc["spec"]["sft"] = {"existingOutput": "/models/sft"}
    status = run_local(tmp_path, doc)
    assert [s.phase for s in status.stages] == ["Skipped", "Succeeded", "Succeeded"]
    assert calls(tmp_path) == ["reward", "ppo"]


def test_retry_failed_only_touches_failed_runs() -> None:
    failed = {
        "phase": "Failed",
        "stages": [{"name": "sft", "phase": "Succeeded"}, {"name": "reward", "phase": "Failed"}],
    }
    again = retry_failed(failed)
    assert again["phase"] == "Running" and [s["phase"] for s in again["stages"]] == ["Succeeded", "Retrying"]
    running = {"phase": "Running", "stages": [{"name": "sft", "phase": "Running"}]}
    assert retry_failed(running) == running


def test_stage_command_uses_torchrun_for_several_processes() -> None:
    assert stage_command("sft", "c.yaml", 1)[1:] == ["-m", "rlhf_trainer", "sft", "--config", "c.yaml"]
    multi = stage_command("sft", "c.yaml", 2)
    assert multi[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc-per-node=2" in multi


# --- spec edits (local/rerun.py) ----------------------------------------------------------------


def _trained(workdir: Path) -> dict[str, tuple[int | None, int | None]]:
    """(steps, resumedFromStep) of each stage's result.json."""
    found = {}
    for name in ("sft", "reward", "ppo"):
        data = json.loads((workdir / "demo" / name / "result.json").read_text())
        found[name] = (data.get("steps"), data.get("resumedFromStep"))
    return found


# (case, spec edit, stages that run again, the fields named for the first of them)
EDITS: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("sft learning rate", {"sft": {"training": {"learningRate": 0.001}}}, ["sft", "reward", "ppo"], "learningRate"),
    ("ppo only", {"ppo": {"training": {"steps": 7}}}, ["ppo"], "ppo.training.steps"),
    ("placement (not in any identity)", {"placement": {"gpusPerWorker": 0, "shmSize": "2Gi"}}, [], ""),
]


@pytest.mark.parametrize(("edit", "again", "named"), [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_a_spec_edit_reruns_the_edited_stage_and_those_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: dict[str, Any], again: list[str], named: str
) -> None:
    doc = document()
    assert run_local(tmp_path, doc).phase == "Succeeded"
    assert calls(tmp_path) == ["sft", "reward", "ppo"]
    hashes = {s["name"]: s["configHash"] for s in report(tmp_path)["stages"]}
    capsys.readouterr()
    # The same file again: nothing runs (the first run's stages are this spec's).
    assert run_local(tmp_path, doc).phase == "Succeeded"
    assert calls(tmp_path) == ["sft", "reward", "ppo"]

    edited = copy.deepcopy(doc)
    for section, value in edit.items():
        edited["spec"][section] = {**edited["spec"].get(section, {}), **value}
    capsys.readouterr()
    assert run_local(tmp_path, edited).phase == "Succeeded"
    out = capsys.readouterr().out
    assert calls(tmp_path) == ["sft", "reward", "ppo", *again]
    for name in again:  # trained from the start under the new identity, not resumed at step 3
        assert _trained(tmp_path)[name] == (3, None)
        assert stage(tmp_path, name)["attempts"] == 1 and stage(tmp_path, name)["jobName"] == f"demo-{name}-1"
        assert stage(tmp_path, name)["configHash"] != hashes[name]
    if again:
        assert f"{again[0]}: changed since it ran (" in out and named in out
    else:
        assert "changed since it ran" not in out
