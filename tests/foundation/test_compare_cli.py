"""`rlhf compare DIR`, the operator side (no torch): find the final stage's config, repoint it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rlhf_api.validation import parse_run
from rlhf_cli import main as cli
from rlhf_cli.rerun_comparison import NothingToCompare, compare_config, final_stage_config, rebase
from rlhf_operator.plan import plan

from .conftest import MINIMAL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/workspace/demo/sft/merged", "/home/me/runs/demo/sft/merged"),
        ("/workspace/demo", "/home/me/runs/demo"),
        ("/workspace/demo-2/sft", "/workspace/demo-2/sft"),  # a sibling run, not under the root
        ("builtin:tiny-llama", "builtin:tiny-llama"),
        ({"a": ["/workspace/demo/x", 3, None]}, {"a": ["/home/me/runs/demo/x", 3, None]}),
    ],
)
def test_rebase(value: object, expected: object) -> None:
    assert rebase(value, "/workspace/demo", "/home/me/runs/demo") == expected


def write_stage_configs(root: Path, mount: str, merged: tuple[str, ...]) -> None:
    for stage_plan in plan(parse_run(MINIMAL), mount):
        out = root / stage_plan.name
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(yaml.safe_dump(stage_plan.config_file()))
        if stage_plan.name in merged:
            (out / "merged").mkdir()


def test_final_stage_config_of_a_volume_copy_points_into_the_copy(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    write_stage_configs(root, "/workspace", merged=("sft", "reward", "ppo"))
    cfg = final_stage_config(root)
    assert cfg.stage == "ppo" and cfg.work_dir == str(root) and cfg.output_dir == str(root / "ppo")
    assert cfg.model.name == str(root / "sft" / "merged")
    assert cfg.compare is not None and cfg.compare.reward_model is not None
    assert cfg.compare.reward_model.name == str(root / "reward" / "merged")
    tuned = compare_config(cfg, prompts=8)
    assert tuned.compare is not None and (tuned.compare.prompts, tuned.compare.max_new_tokens) == (8, 8)


def test_an_unfinished_final_stage_falls_back_to_the_last_finished_policy(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    write_stage_configs(root, str(tmp_path), merged=("sft", "reward"))
    cfg = final_stage_config(root)
    assert cfg.stage == "sft" and cfg.compare is None
    # planned without a compare section: the stage's own defaults
    settings = compare_config(cfg).compare
    assert settings is not None and settings.reward_model is None and settings.max_new_tokens == 8


def test_nothing_to_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NothingToCompare):
        final_stage_config(tmp_path)
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "no finished policy stage" in capsys.readouterr().err
