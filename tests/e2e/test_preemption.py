"""End to end: a stage process killed or preempted under `rlhf run`, with the real trainer.

The issue's acceptance: SIGKILL mid-SFT after its first checkpoint -> a failed attempt, retried,
finished with attempts 2 and resumedFromStep > 0; SIGTERM instead -> the stage checkpoints the
step it was at, and the next attempt resumes at exactly that step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def short_sft(workdir: Path) -> Path:
    """The quickstart's SFT stage alone, shortened, checkpointing often, retried at once."""
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    spec = doc["spec"]
    spec["pipeline"] = ["sft"]
    for stage in ("reward", "ppo"):
        spec.pop(stage)
    spec["sft"]["training"].update(maxSteps=80, saveSteps=10, loggingSteps=1, evalMaxNewTokens=4)
    spec["sft"].update(retries=1, retryBackoffSeconds=0)
    path = workdir / "short.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start(path: Path, workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf_cli.main", "run", str(path), "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stage_pid(workdir: Path) -> int:
    jobs = json.loads((workdir / "quickstart" / "jobs.json").read_text())
    pid: int = jobs["quickstart-sft-1"]["status"]["pid"]
    return pid


def wait_for_step(workdir: Path, step: int) -> None:
    """Until the SFT stage's log (every progress line, unthrottled) reports `step` or later."""
    log = workdir / "quickstart" / "sft" / "stage.log"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if any(int(n) >= step for n in re.findall(r'"step":(\d+)', text)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the SFT stage did not reach step {step}")


def finish(proc: subprocess.Popen[str], seen: list[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=900)
    seen.append(out)
    assert proc.returncode == 0, "".join(seen)[-4000:]
    return next(s for s in json.loads(next(Path(proc.args[-1]).glob("*/report.json")).read_text())["stages"])


@pytest.mark.slow
def test_killed_stage_is_retried_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    proc, seen = start(short_sft(tmp_path), tmp_path), []
    checkpoint = tmp_path / "quickstart" / "sft" / "checkpoints" / "checkpoint-10"
    deadline = time.monotonic() + 600
    while not (checkpoint / "trainer_state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(stage_pid(tmp_path), signal.SIGKILL)
    sft = finish(proc, seen)
    assert sft["phase"] == "Succeeded" and sft["attempts"] == 2
    assert sft["resumedFromStep"] >= 10


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_the_retry_resumes_there(tmp_path: Path) -> None:
    proc, seen = start(short_sft(tmp_path), tmp_path), []
    wait_for_step(tmp_path, 13)  # past the periodic checkpoint at 10, before the next at 20
    os.kill(stage_pid(tmp_path), signal.SIGTERM)
    sft = finish(proc, seen)
    events = [json.loads(line) for line in (tmp_path / "quickstart" / "events.jsonl").read_text().splitlines()]
    preempted = next(e for e in events if e["reason"] == "StagePreempted")
    stop = int(re.search(r"checkpoint saved at step (\d+)", preempted["message"]).group(1))  # type: ignore[union-attr]
    assert stop >= 13 and stop % 10 != 0  # the step the signal arrived at, not a periodic one
    assert sft["phase"] == "Succeeded" and sft["attempts"] == 2 and sft["preemptions"] == 1
    assert sft["resumedFromStep"] == stop
