"""`rlhf run` as a person sees it, end to end through the CLI with the fake trainer (40 steps a
stage): progress bars with ETA in a pseudo-terminal (made by `script`), few plain lines in a log."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_local_run import document, fake_rlhf_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def rlhf_run_command(tmp_path: Path) -> list[str]:
    return fake_rlhf_run(document(), tmp_path)


def environment(**extra: str) -> dict[str, str]:
    return dict(os.environ, FAKE_STEPS="40", FAKE_STEP_SECONDS="0.04", **extra)


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script (util-linux) for a pseudo-terminal")
def test_a_terminal_shows_progress_bars_with_eta(tmp_path: Path) -> None:
    typescript = tmp_path / "typescript"
    proc = subprocess.run(
        ["script", "-q", "-e", "-c", shlex.join(rlhf_run_command(tmp_path)), str(typescript)],
        env=environment(TERM="xterm-256color", COLUMNS="160", LINES="40"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    raw = typescript.read_text(errors="replace")
    assert proc.returncode == 0, raw[-3000:]
    screen = ANSI.sub("", raw)
    # a bar mid-way: steps done/total, elapsed, ETA, rate and the headline numbers
    bar = r"reward\s+━+.*\b\d+/40 steps \d+:\d\d:\d\d ETA \d+:\d\d:\d\d [\d.]+ steps/s loss="
    assert re.search(bar, screen), screen[-3000:]
    assert "\x1b[2K" in raw  # the bars redraw in place (erase line), they do not scroll
    for stage in ("sft", "reward", "ppo"):  # each collapsed to one line
        assert re.search(rf"✓ {stage}\s+succeeded  40/40 steps", screen), stage
    assert re.search(r"ppo\s+Succeeded\s+1\s+\d+s\s+task_accuracy=0.5", screen)  # the summary table
    assert "run succeeded. Report:" in screen and (tmp_path / "demo" / "report.html").is_file()


def test_a_log_gets_few_plain_lines(tmp_path: Path) -> None:
    proc = subprocess.run(rlhf_run_command(tmp_path), env=environment(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "\x1b[" not in proc.stdout
    for stage in ("sft", "reward", "ppo"):
        lines = [line for line in proc.stdout.splitlines() if line.startswith(f"[{stage}]")]
        assert len([line for line in lines if " step " in line]) == 11, proc.stdout  # first step, each 10%
        assert len(lines) <= 15
    assert "ETA" in proc.stdout and "report.html" in proc.stdout
