"""`rlhf compare DIR`: run the side-by-side comparison of a finished run again, or for the first time.

The operator package never imports torch: this finds the final stage's config file in DIR,
points its paths at DIR (a copy of a cluster volume has `/workspace/<run>/...` in it), and
runs `rlhf-train compare --config FILE` as a child process, like `rlhf run` runs stages.
"""

from __future__ import annotations

import posixpath
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from rlhf_api import layout, progress
from rlhf_api.evaluation import SAMPLES, read_summary
from rlhf_api.stages import POLICY_STAGES, STAGES
from rlhf_api.trainer_job import TrainerJobConfig

from .local.launcher import stage_command

COMPARE_CONFIG = "compare-config.yaml"


class NothingToCompare(ValueError):
    pass


def rebase(value: Any, old_root: str, new_root: str) -> Any:
    """Every string equal to old_root or under it, moved under new_root (pure, recursive)."""
    if isinstance(value, str):
        if value == old_root:
            return new_root
        if value.startswith(old_root.rstrip("/") + "/"):
            return posixpath.join(new_root, value[len(old_root.rstrip("/")) + 1 :])
        return value
    if isinstance(value, dict):
        return {k: rebase(v, old_root, new_root) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, old_root, new_root) for v in value]
    return value


def final_stage_config(root: Path) -> TrainerJobConfig:
    """The config of the last policy stage (pipeline order) that has one in root."""
    for stage in reversed(STAGES):
        path = root / stage / layout.CONFIG
        if stage in POLICY_STAGES and path.is_file() and (root / stage / layout.MERGED).is_dir():
            raw = yaml.safe_load(path.read_text())
            if isinstance(raw, dict) and raw.get("workDir"):
                raw = rebase(raw, str(raw["workDir"]), str(root))
            return TrainerJobConfig.model_validate(raw)
    raise NothingToCompare(
        f"{root}: no finished policy stage (one of {', '.join(POLICY_STAGES)} with config.yaml and merged/) to compare"
    )


def compare_config(
    cfg: TrainerJobConfig, prompts: int | None = None, max_new_tokens: int | None = None
) -> TrainerJobConfig:
    """cfg with its compare section set: as planned (or the stage's defaults), then the overrides."""
    settings = cfg.compare_settings()
    updates = {k: v for k, v in {"prompts": prompts, "max_new_tokens": max_new_tokens}.items() if v is not None}
    return cfg.model_copy(update={"compare": settings.model_copy(update=updates)})


def run_compare(root: Path, prompts: int | None = None, max_new_tokens: int | None = None) -> int:
    """Write eval/compare-config.yaml and run the trainer's compare on it; returns its exit code.

    Progress events become one line; the trainer's other output is shown only when it fails."""
    cfg = compare_config(final_stage_config(root), prompts, max_new_tokens)
    eval_dir = Path(layout.eval_dir(str(root)))
    eval_dir.mkdir(parents=True, exist_ok=True)
    config_path = eval_dir / COMPARE_CONFIG
    config_path.write_text(yaml.safe_dump(cfg.to_file_dict(), sort_keys=False))
    command = stage_command("compare", str(config_path), nproc=1)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    other: list[str] = []
    for line in proc.stdout:
        event = progress.parse(line)
        if event is not None and event.get("event") == "compare":
            print(f"comparing {event.get('prompts')} held-out prompts: {cfg.model.name} vs {cfg.stage}'s output")
        elif event is None:
            other.append(line.rstrip())
    code = proc.wait()
    if code != 0:
        print("\n".join(f"  | {line}" for line in other[-20:]), file=sys.stderr)
    return code


def summary_line(root: Path) -> str:
    summary = read_summary(layout.eval_dir(str(root)))
    if summary is None:
        return f"no comparison in {layout.eval_dir(str(root))}"
    parts = [f"{summary.prompts} prompts"]
    if summary.win_rate is not None:
        parts.append(
            f"win rate {summary.win_rate:.1%} ({summary.wins} wins, {summary.ties} ties, {summary.losses} losses)"
        )
    before, after = summary.baseline, summary.candidate
    if before.task_accuracy is not None and after.task_accuracy is not None:
        parts.append(f"task_accuracy {before.task_accuracy:.3g} -> {after.task_accuracy:.3g}")
    if before.reward_mean is not None and after.reward_mean is not None:
        parts.append(f"reward {before.reward_mean:.3g} -> {after.reward_mean:.3g}")
    return "compared: " + ", ".join(parts) + f"; samples in {layout.eval_dir(str(root))}/{SAMPLES}"
