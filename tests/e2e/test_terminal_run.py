"""`rlhf run` as a person sees it: progress bars with ETA in a terminal (a pseudo-terminal made
by `script`), few plain lines in a log. One short real stage (SFT, 40 steps) each way."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RUN = {
    "apiVersion": "rlhf.dev/v1alpha1",
    "kind": "RLHFRun",
    "metadata": {"name": "tty"},
    "spec": {
        "model": {"name": "builtin:tiny-llama", "dtype": "float32"},
        "pipeline": ["sft"],
        "placement": {"gpusPerWorker": 0},
        "evaluation": {"enabled": False},
        "sft": {
            "lora": {"enabled": False},
            "dataset": {"source": "builtin:arithmetic", "format": "template", "maxSamples": 400},
            "training": {"maxSteps": 40, "batchSize": 4, "maxLength": 64, "loggingSteps": 2, "evalMaxNewTokens": 3},
        },
    },
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_file(tmp_path: Path) -> Path:
    path = tmp_path / "tty.yaml"
    path.write_text(yaml.safe_dump(RUN))
    return path


def command(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf_operator.cli", "run", str(run_file(tmp_path)), "--workdir", str(tmp_path)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script (util-linux) for a pseudo-terminal")
def test_terminal_run_shows_progress_bars_with_eta(tmp_path: Path) -> None:
    typescript = tmp_path / "typescript"
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="160", LINES="40")
    proc = subprocess.run(
        ["script", "-q", "-e", "-c", shlex.join(command(tmp_path)), str(typescript)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    raw = typescript.read_text(errors="replace")
    assert proc.returncode == 0, raw[-3000:]
    screen = ANSI.sub("", raw)
    # a bar mid-way: steps done/total, ETA, rate and the headline numbers
    assert re.search(r"sft\s+━+.*\d+/40 steps \d+:\d\d:\d\d ETA \d+:\d\d:\d\d [\d.]+ steps/s loss=", screen), screen[
        -3000:
    ]
    assert "\x1b[2K" in raw  # the bars redraw in place (erase line), not scroll
    assert re.search(r"✓ sft\s+succeeded  40/40 steps", screen)  # collapsed to one line
    assert re.search(r"sft\s+Succeeded\s+1\s+\d+s\s+task_accuracy=", screen)  # the summary table
    assert (tmp_path / "tty" / "report.html").is_file()


@pytest.mark.slow
def test_log_run_prints_few_plain_lines(tmp_path: Path) -> None:
    proc = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    stage_lines = [line for line in lines if line.startswith("[sft]")]
    assert len(stage_lines) <= 15, proc.stdout
    assert len([line for line in stage_lines if " step " in line]) == 11  # first step, then each 10%
    assert "\x1b[" not in proc.stdout
    assert "ETA" in proc.stdout and "report.html" in proc.stdout
