"""A stage's checkpoints on the volume: where they are, the latest complete one, its step."""

from __future__ import annotations

import re
from pathlib import Path

from rlhf_api.layout import CHECKPOINTS
from rlhf_api.stage_config import TrainerJobConfig


def checkpoints_dir(output_dir: str) -> str:
    return str(Path(output_dir) / CHECKPOINTS)


_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(directory: str) -> str | None:
    """The checkpoint-N subdirectory with the highest N that is complete, or None."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in root.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        # trainer_state.json is written last by the HF Trainer: its presence means complete.
        if match and child.is_dir() and (child / "trainer_state.json").exists():
            found.append((int(match.group(1)), child))
    return str(max(found)[1]) if found else None


def resume_point(cfg: TrainerJobConfig) -> str | None:
    """The latest complete checkpoint of this stage's output dir (a restarted stage resumes)."""
    return latest_checkpoint(checkpoints_dir(cfg.output_dir))


def step_of(checkpoint: str) -> int:
    match = _CHECKPOINT_RE.match(Path(checkpoint).name)
    return int(match.group(1)) if match else 0
