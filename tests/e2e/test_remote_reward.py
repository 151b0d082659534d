"""End to end: examples/quickstart-remote-reward.yaml with `rlhf run`, its GRPO scored by
`rlhf serve-reward` on 127.0.0.1, as the example's comment tells a user to run it.

To keep CI short the SFT and reward models come from one `rlhf run` of quickstart-grpo's first
two stages (the same recipes), and the example reuses that SFT model (sft.existingOutput); the
threshold is the one the in-process GRPO quickstart meets: GRPO beats SFT on ground truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.served.servers import serve_reward

from .test_quickstart import REPO, metrics, rlhf_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_quickstart_remote_reward_beats_sft(tmp_path: Path) -> None:
    base = yaml.safe_load((REPO / "examples" / "quickstart-grpo.yaml").read_text())
    base["spec"]["pipeline"] = ["sft", "reward"]
    del base["spec"]["grpo"]
    first = tmp_path / "sft-reward.yaml"
    first.write_text(yaml.safe_dump(base))
    started = time.monotonic()
    proc, report = rlhf_run(str(first), tmp_path / "first")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sft_accuracy = metrics(report)["sft"]["task_accuracy"]
    trained = time.monotonic()

    run_dir = tmp_path / "first" / "quickstart-grpo"
    with serve_reward(str(run_dir / "reward")) as url:
        document = yaml.safe_load((REPO / "examples" / "quickstart-remote-reward.yaml").read_text())
        assert document["spec"]["grpo"]["rewards"][0]["remote"]["url"] == "http://127.0.0.1:8000/score"
        document["spec"]["grpo"]["rewards"][0]["remote"]["url"] = url  # the port the server got
        document["spec"]["sft"] = {"existingOutput": str(run_dir / "sft" / "merged")}
        example = tmp_path / "quickstart-remote-reward.yaml"
        example.write_text(yaml.safe_dump(document))
        proc, report = rlhf_run(str(example), tmp_path / "second")
    finished = time.monotonic()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert [(s["name"], s["phase"]) for s in report["stages"]] == [("sft", "Skipped"), ("grpo", "Succeeded")]
    m = metrics(report)["grpo"]
    print(
        f"sft task_accuracy {sft_accuracy:.3f}, grpo (remote reward) {m['task_accuracy']:.3f}; "
        f"sft+reward {trained - started:.0f} s, grpo {finished - trained:.0f} s"
    )
    assert m["task_accuracy"] > sft_accuracy
    assert {"rewards/reward_model/mean", "rewards/reward_model/std", "reward"} <= set(m)
    # the final comparison scores through the remote source too (issue 24, item 8)
    assert "eval_win_rate" in m and m["remote_requests"] > 0
