"""End to end: the ReST and RLAIF quickstarts as a user runs them (`rlhf run FILE`), one seed.

Kept short for CI: the RLAIF run starts from the ReST run's SFT model (`sft.existingOutput`;
both examples train the same SFT stage), so SFT trains once for both. Thresholds are far below
the benchmarked means (benchmarks/quickstart_bench.py prints them with their spread).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .test_quickstart import ONE_ANSWER, REPO, metrics, rlhf_run


@pytest.fixture(scope="module")
def rest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    workdir = tmp_path_factory.mktemp("rest")
    proc, report = rlhf_run("quickstart-rest.yaml", workdir)
    return proc, report, workdir / "quickstart-rest"


@pytest.mark.slow
def test_quickstart_sft_reward_rest(rest_run: tuple[Any, dict[str, Any], Path]) -> None:
    proc, report, root = rest_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert [(s["name"], s["phase"]) for s in report["stages"]] == [
        ("sft", "Succeeded"),
        ("reward", "Succeeded"),
        ("rest", "Succeeded"),
    ]
    m = metrics(report)
    assert m["rest"]["task_accuracy_before"] == pytest.approx(m["sft"]["task_accuracy"], abs=ONE_ANSWER)
    assert m["rest"]["task_accuracy"] > m["sft"]["task_accuracy"]
    assert m["rest"]["iterations"] == 4
    state = json.loads((root / "rest" / "rest_state.json").read_text())
    assert [(i["grow"], i["improve"]) for i in state["iterations"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    first, second = state["iterations"][:2]
    assert second["threshold"] >= first["threshold"] and second["samples_kept"] < first["samples_kept"]
    for grow in (1, 2):
        assert (root / "rest" / f"grow-{grow}" / "samples.jsonl").is_file()
    assert (root / "rest" / "merged" / "config.json").is_file()
    assert "[rest] iteration" in proc.stdout


@pytest.mark.slow
def test_quickstart_sft_rlaif_dpo(rest_run: tuple[Any, dict[str, Any], Path], tmp_path: Path) -> None:
    _, rest_report, rest_root = rest_run
    document = yaml.safe_load((REPO / "examples" / "quickstart-rlaif.yaml").read_text())
    document["spec"]["sft"] = {"existingOutput": str(rest_root / "sft" / "merged")}
    example = tmp_path / "quickstart-rlaif.yaml"
    example.write_text(yaml.safe_dump(document))
    proc, report = rlhf_run(str(example), tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert [(s["name"], s["phase"]) for s in report["stages"]] == [
        ("sft", "Skipped"),
        ("rlaif", "Succeeded"),
        ("dpo", "Succeeded"),
    ]
    m = metrics(report)
    rlaif = m["rlaif"]
    assert rlaif["label_agreement"] >= 0.9 and rlaif["pairs_written"] >= 100
    assert 0.4 <= rlaif["first_position_preference"] <= 0.6
    pairs = (tmp_path / "quickstart-rlaif" / "rlaif" / "preferences.jsonl").read_text().splitlines()
    assert len(pairs) == rlaif["pairs_written"]
    assert set(json.loads(pairs[0])) == {"prompt", "chosen", "rejected", "confidence"}
    sft_accuracy = metrics(rest_report)["sft"]["task_accuracy"]
    assert m["dpo"]["task_accuracy"] > sft_accuracy
