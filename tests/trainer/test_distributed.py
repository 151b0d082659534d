"""SFT under torchrun with two CPU processes (gloo): one result, one merged model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rlhf_api.result import read_result

from .stage_helpers import write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_sft_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "out"
    config = write_config(tmp_path / "sft.yaml", "sft", str(tmp_path), out, training={"maxSteps": 3, "saveSteps": 3})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node=2", "--standalone", "-m", "rlhf_trainer", "sft", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=380,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(str(out / "result.json"))
    assert result is not None and result.status == "succeeded"
    assert result.metrics["global_step"] == 3 and "task_accuracy" in result.metrics
    assert (out / "merged" / "model.safetensors").exists()
    assert (out / "checkpoints" / "checkpoint-3").exists()
    # Only rank 0 reports completion and writes the result.
    assert proc.stdout.count('"event":"done"') == 1
