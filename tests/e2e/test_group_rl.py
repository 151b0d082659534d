"""End to end: the RLOO and GRPO quickstarts with `rlhf run`, one seed each.

RLOO runs its example exactly as a user does; GRPO reuses that run's SFT model (the same SFT
recipe, via sft.existingOutput) to keep CI short, and trains its own reward model. Thresholds
are the rule the benchmark checks over 3 seeds (the final stage beats SFT), on one seed;
benchmarks/quickstart_bench.py prints the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_quickstart import REPO, metrics, rlhf_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rloo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("rloo")
    proc, report = rlhf_run("quickstart-rloo.yaml", workdir)
    return workdir, proc, report


def test_quickstart_sft_rloo(rloo_run: tuple[Path, Any, dict[str, Any]]) -> None:
    workdir, proc, report = rloo_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert [(s["name"], s["phase"]) for s in report["stages"]] == [("sft", "Succeeded"), ("rloo", "Succeeded")]
    m = metrics(report)
    assert m["rloo"]["task_accuracy"] > m["sft"]["task_accuracy"]
    # the exact-match reward rose from the first logged step to the last quarter of the run
    assert m["rloo"]["rewards/exact_match/mean"] == m["rloo"]["reward"] > m["rloo"]["reward_initial"]
    assert m["rloo"]["kl"] > 0 and 1 <= m["rloo"]["completion_length"] <= 4
    out = workdir / "quickstart-rloo" / "rloo"
    assert (out / "merged" / "config.json").is_file() and (out / "checkpoints" / "checkpoint-80").is_dir()
    assert any((out / "logs").rglob("events.out.tfevents*"))
    assert "[rloo] step" in proc.stdout


def test_quickstart_sft_reward_grpo(rloo_run: tuple[Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    sft_dir, _, rloo_report = rloo_run
    sft_accuracy = metrics(rloo_report)["sft"]["task_accuracy"]
    document = yaml.safe_load((REPO / "examples" / "quickstart-grpo.yaml").read_text())
    document["spec"]["sft"] = {"existingOutput": str(sft_dir / "quickstart-rloo" / "sft" / "merged")}
    example = tmp_path / "quickstart-grpo.yaml"
    example.write_text(yaml.safe_dump(document))
    proc, report = rlhf_run(str(example), tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert [(s["name"], s["phase"]) for s in report["stages"]] == [
        ("sft", "Skipped"),
        ("reward", "Succeeded"),
        ("grpo", "Succeeded"),
    ]
    m = metrics(report)
    assert m["reward"]["pair_accuracy"] >= 0.9
    assert m["grpo"]["task_accuracy"] > sft_accuracy
    assert {"rewards/reward_model/mean", "rewards/reward_model/std", "reward", "completion_length"} <= set(m["grpo"])
